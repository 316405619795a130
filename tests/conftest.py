"""Shared test setup: small data in temporary folders, the real recordings when present."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnjax.runtime import use_fast_xla_flags

use_fast_xla_flags()  # the tests run under the XLA flags that runs ship with

REPO = Path(__file__).resolve().parents[1]
PASCAL_DIR = REPO.parent / "shared" / "data" / "pascal-heartbeat"


@pytest.fixture
def pascal_dir() -> Path:
    """The real PASCAL recordings beside the repo; tests using them skip when absent."""
    if not (PASCAL_DIR / "set_b.csv").exists():
        pytest.skip(f"real PASCAL heart-sound data not found at {PASCAL_DIR}")
    return PASCAL_DIR
