"""Where the repository is: the one place the checkout's root is computed."""
from __future__ import annotations

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def in_repo(*parts: str) -> str:
    return os.path.join(REPO_ROOT, *parts)


def shown(path: str) -> str:
    """A path as messages show it: relative when under the working directory, else absolute."""
    relative = os.path.relpath(path)
    return os.path.abspath(path) if relative.startswith("..") else relative
