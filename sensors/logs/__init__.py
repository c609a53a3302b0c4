"""Log readers: Suricata EVE JSON, Zeek logs (JSON or TSV) and generic NDJSON into flat ECS events.

One job per module: `follow` (`LogTail`: checkpointed tail across rotation and truncation), `registry` (decoders by
format name), `suricata`, `zeek`, `ndjson` (one decoder each), `fields` (errors and ECS helpers they share) and
`reader` (`LogReader`: the ingest loop). A line is only consumed once it ends with a newline; the checkpoint is saved
by the caller after the events up to `LogTail.position` are stored (`LogTail.commit()`), so a crash repeats at most
an unstored batch (and the store de-duplicates it by event id: every event carries `log.file.path` and `log.offset`).
"""

from __future__ import annotations

# isort: off
from sensors.logs import suricata, zeek, ndjson  # noqa: F401 - registers the decoders, in FORMATS' order
# isort: on
from sensors.logs.fields import BAD_RECORD, LogError, flatten
from sensors.logs.follow import LogTail
from sensors.logs.reader import LogReader
from sensors.logs.registry import DECODERS, register
from sensors.logs.suricata import suricata_event
from sensors.logs.zeek import ZEEK_KINDS, ZeekTSV, zeek_event, zeek_kind

FORMATS = tuple(DECODERS)

__all__ = ["BAD_RECORD", "DECODERS", "FORMATS", "ZEEK_KINDS", "LogError", "LogReader", "LogTail", "ZeekTSV",
           "flatten", "register", "suricata_event", "zeek_event", "zeek_kind"]
