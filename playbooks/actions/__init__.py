"""Playbook actions: `base` holds the interface; each other module here registers one action on import."""

from __future__ import annotations

import importlib
import pkgutil

from playbooks.actions.base import REGISTRY, Action, ActionError, Context, Result, register

__all__ = ["REGISTRY", "Action", "ActionError", "Context", "Result", "register", "load_all"]


def load_all() -> dict[str, type[Action]]:
    """Import every action module in this package (each registers itself) and return the registry."""
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base":
            importlib.import_module(f"{__name__}.{mod.name}")
    return REGISTRY
