"""Helpers shared by the tests: private servers, app processes, waiting, pipelines."""
