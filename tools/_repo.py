"""Lets ``python tools/<tool>.py`` import the toolkit from this checkout: the one sys.path entry.

Every tool imports this first; the package itself finds the repository through
``svtr_toolkit.paths``.
"""
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
