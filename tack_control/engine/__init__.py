"""The engine: one pipeline model under both Tangled faces: database, dispatch to providers, statuses, the event log."""
