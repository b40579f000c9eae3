"""The Tekton provider: each workflow routed to it becomes one PipelineRun of an existing Pipeline."""
