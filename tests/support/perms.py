"""File modes under the most permissive umask a user may have: nothing may rely on it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def open_umask():
    old = os.umask(0o000)
    yield
    os.umask(old)
