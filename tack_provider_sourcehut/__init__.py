"""The sourcehut provider: each workflow routed to it becomes one builds.sr.ht job of the workflow's manifest."""
