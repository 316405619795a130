"""Shared test setup: small data in temporary folders, the real recordings when present."""

from __future__ import annotations

import shutil
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


# Temporary folders are freed as soon as they are done with. pytest keeps every test's folder
# to the end of the session, and the suite writes several GB there (a ResNet-18 checkpoint is
# 70 MB and runs keep several): a machine with a few GB of free disk would fill up. A failed
# test keeps its folder, and so do the folders of a module with a failure, for a look inside.
_FAILED = pytest.StashKey[bool]()
_FAILURES = pytest.StashKey[int]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    if outcome.get_result().failed:
        item.stash[_FAILED] = True
        item.session.stash[_FAILURES] = item.session.stash.get(_FAILURES, 0) + 1


@pytest.fixture(autouse=True)
def free_tmp_path(request: pytest.FixtureRequest):
    """Deletes a passed test's `tmp_path` when the test ends."""
    yield
    tmp_path = (request.node.funcargs or {}).get("tmp_path")
    if tmp_path is not None and not request.node.stash.get(_FAILED, False):
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def free_module_tmp(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Deletes what a module's tests and fixtures made in the session's temporary folder when
    the module ends, unless one of its tests failed."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failures = request.session.stash.get(_FAILURES, 0)
    yield
    if request.session.stash.get(_FAILURES, 0) == failures:
        for path in set(base.iterdir()) - before:
            shutil.rmtree(path, ignore_errors=True)
