"""Ingest: what Tangled sends (Jetstream records, knot streams), parsed, authorized and routed into the engine."""
