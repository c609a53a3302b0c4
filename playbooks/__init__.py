"""Playbooks: OASIS CACAO 2.0 incident-response playbooks run against the store (docs/playbooks.md).

`cacao` reads, exports and validates playbooks; `engine` runs them (dry run unless executed, approvals, resume,
undo); `actions` holds the action plugins; `library/` the shipped playbooks; `schemas/` OASIS's CACAO JSON schemas.
"""
