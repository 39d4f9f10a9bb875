"""Shared pytest configuration for the e2e suite: the real local API server fixtures."""

pytest_plugins = ["sim.envtest.pytest_plugin"]
