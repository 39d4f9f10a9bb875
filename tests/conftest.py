"""Shared pytest configuration: the real local API server fixtures (``envtest.pytest_plugin``)."""

pytest_plugins = ["envtest.pytest_plugin"]
