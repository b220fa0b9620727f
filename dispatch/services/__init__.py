"""Dispatch writes: campaigns, triggers, the worker's batch, the sweeper, unsubscribes."""
