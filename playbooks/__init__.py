"""Playbooks: YAML incident-response playbooks run against the store."""
