"""Where the repository is: the one place the checkout's root is computed."""
from __future__ import annotations

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def in_repo(*parts: str) -> str:
    return os.path.join(REPO_ROOT, *parts)
