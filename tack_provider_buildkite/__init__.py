"""The Buildkite provider: one Buildkite build per Tangled workflow.

Spawn creates the build (idempotently, through build meta-data), webhooks and a
budgeted reconciliation poll report its status, each job's log becomes one
Tangled step, and Cancel cancels the build. See README.md for the operator's view.
"""
