"""Sensors: turn packets, logs and host state into flat ECS events. They know nothing of stores or rules."""
