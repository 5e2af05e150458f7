"""Glue shared by the top-level scripts (build_engine.py, inference.py).

The command-line conventions (the one-line ``error:``, the shared flags) live in
``svtr_toolkit.cli``; this module keeps the model zoo's import path for them.
"""
from svtr_toolkit.cli import run_cli  # noqa: F401
