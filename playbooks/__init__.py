"""Playbooks: YAML incident-response playbooks run against the store.

Reserved for the playbook engine (docs/architecture.md); nothing here runs yet, and `soc` has no playbook command.
"""
