"""Compliance scans: SCA-format policies evaluated read-only against a host tree, results as ECS state events."""

from sensors.compliance.policy import Check, Policy, PolicyError, load_policy, parse_policy
from sensors.compliance.scanner import CheckResult, Scanner, ScanResult

__all__ = ["Check", "CheckResult", "Policy", "PolicyError", "ScanResult", "Scanner", "load_policy", "parse_policy"]
