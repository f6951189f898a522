"""Helpers shared by the tests: configs, free ports, in-process servers, processes."""
