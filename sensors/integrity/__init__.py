"""File integrity monitoring and website defacement checks (read-only; events for the pipeline).

policy (the watch policy), walker (walk and attributes), baseline (stored, keyed), events (diff -> ECS),
scan (one pass), follow (inotify + periodic scans), web (page fingerprints)."""

from sensors.integrity.policy import ATTRIBUTES, WatchPolicy, load_watch_policy

__all__ = ["ATTRIBUTES", "WatchPolicy", "load_watch_policy"]
