"""The information-classification policy: model, YAML loading, lookups, enrichment, detection, sharing."""

from correlator.policy.detect import PolicyDetector, severity
from correlator.policy.engine import PolicyEngine
from correlator.policy.loader import PolicyError, load_policy, parse_policy
from correlator.policy.model import Level, Policy

__all__ = ["Level", "Policy", "PolicyDetector", "PolicyEngine", "PolicyError", "load_policy", "parse_policy",
           "severity"]
