"""Shared pytest configuration: the real local API server fixtures (``sim.envtest.pytest_plugin``)."""

pytest_plugins = ["sim.envtest.pytest_plugin"]
