"""Correlator: normalizes, enriches and detects on ECS events, then persists events and alerts to a store."""
