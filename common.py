"""Glue shared by the top-level scripts (build_engine.py, inference.py).

The real logic lives in the ``svtr_toolkit`` package; this module only holds the
command-line conventions both scripts follow.
"""
import sys

from svtr_toolkit.errors import ToolkitError


def run_cli(main, argv=None):
    """Run ``main(argv)``; a ToolkitError becomes one line on stderr and exit status 2."""
    try:
        code = main(argv)
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
