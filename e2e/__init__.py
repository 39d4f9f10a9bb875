"""The end-to-end suite: the rendered WorkflowTemplate run against the simulator (see e2e/README.md)."""
