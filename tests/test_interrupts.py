"""Runs stopped at every point a run can be stopped, by real signals to real `cnnjax.main`
processes, then resumed: each must end bit-identical (train state and metrics) to a run that
was never stopped, a rerun of `--mode=cv` must continue the fold it was in, and a resume with
a config its checkpoints cannot follow must stop naming the field.

Each interruption is timed by something the run writes (a folder, a file, a line of its
progress), never by a sleep, and checked afterwards by what it left behind. The runs share a
compilation cache, so that only the first one compiles (a resumed run's programs are the same).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from conftest import REPO
from test_checkpoint import FINAL_STEP, TINY, metrics_without_timing, state_checksum

NUM_RECORDINGS = 20  # TINY's synthetic set
EPOCH_ENDS_ONLY = "--config.checkpoint.every_steps=0"  # the default: steps replay on resume
# One thread computes the log-mels: about a second for the 20 recordings, a window the test
# can hit. Two threads store all 20 within a tenth of a second of the first, too short to
# stop the run reliably in between on a loaded machine.
SERIAL_FEATURES = "--config.data.feature_workers=1"


def _ctrl_c_as_from_a_terminal() -> None:
    """A suite started in the background (`cmd &` in a script, `nohup`) hands its children
    SIGINT ignored, and a Python started so never raises KeyboardInterrupt: the run must see
    Ctrl-C as a terminal delivers it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Launch:
    """A `cnnjax.main` process whose stderr is collected as it comes, so that a test can act
    the moment the run shows or writes something."""

    def __init__(self, workdir: Path, data_dir: Path, cache: Path, *flags: str):
        env = dict(os.environ, CNNJAX_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO),
                   JAX_COMPILATION_CACHE_DIR=str(cache),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
        overridden = {flag.split("=")[0] for flag in flags}  # a repeated tuple flag appends
        tiny = [flag for flag in TINY if flag.split("=")[0] not in overridden]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cnnjax.main", f"--workdir={workdir}", *tiny, *flags],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=_ctrl_c_as_from_a_terminal)
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for chunk in iter(lambda: self.process.stderr.read1(1 << 16), b""):
            self._chunks.append(chunk)

    @property
    def stderr(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def steps_shown(self) -> int:
        """The furthest step the progress bar has shown."""
        return max(map(int, re.findall(rf"(\d+)/{FINAL_STEP} \[", self.stderr)), default=0)

    def wait_for(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 240
        while not ready():
            assert self.process.poll() is None, f"the run ended before {what}:\n" \
                                                f"{self.stderr[-3000:]}"
            assert time.monotonic() < deadline, f"the run never reached {what}"
            time.sleep(0.002)

    def finish(self, signum: int | None = None) -> int:
        """Sends `signum` (if any) and returns the exit code once the run has ended."""
        if signum is not None:
            self.process.send_signal(signum)
        self.process.wait(timeout=240)
        self._reader.join()
        return self.process.returncode


def committed(workdir: Path) -> list[int]:
    """The steps whose checkpoint was completely written."""
    markers = (workdir / "checkpoints").glob("*/commit_success.txt")
    return sorted(int(p.parent.name) for p in markers if p.parent.name.isdigit())


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache) -> Path:
    """A run never stopped (checkpoints at every step); the others are held to it."""
    tmp = tmp_path_factory.mktemp("reference")
    launch = Launch(tmp / "run", tmp / "data", cache)
    assert launch.finish() == 0, launch.stderr
    return tmp / "run"


@pytest.mark.slow
def test_a_run_stopped_at_every_point_ends_bit_identical(reference, cache, tmp_path):
    """One workdir stopped eight times, at a point of each kind, each time rerun with the same
    command: while the dataset is built, while the feature cache is written, between two
    checkpoints, during evaluation, during an asynchronous save, by Ctrl-C twice, by Ctrl-C
    once; the last rerun finishes. Checkpoints only at epoch ends (the default), so steps are
    replayed.

    Evaluation leaves no trace on disk: it is hit by killing the run the moment its progress
    bar says `evaluating` (the evaluation of 6 recordings lasts long enough here), and checked
    by the epoch's metrics and checkpoint being absent afterwards."""
    workdir, data = tmp_path / "run", tmp_path / "data"

    def launch() -> Launch:
        return Launch(workdir, data, cache, EPOCH_ENDS_ONLY, SERIAL_FEATURES)

    # The TFDS build: killed while TFDS writes into its `incomplete.*` folder.
    run = launch()
    run.wait_for(lambda: any(data.glob("tfds/*/*/*/incomplete.*")), "the dataset build")
    assert run.finish(signal.SIGKILL) == -signal.SIGKILL
    assert not any(data.glob("tfds/**/build_summary.json"))

    # The feature cache: Ctrl-C once the first spectrogram is stored; nothing to save yet.
    run = launch()
    run.wait_for(lambda: any(data.glob("features/*/*.npy")), "the feature cache")
    assert run.finish(signal.SIGINT) == 130, run.stderr
    assert "building" in run.stderr  # the interrupted build was done again
    assert "Traceback" not in run.stderr
    assert "interrupted" in run.stderr.strip().splitlines()[-1]
    assert 0 < len(list(data.glob("features/*/*.npy"))) < NUM_RECORDINGS

    # Between two checkpoints: killed at step 5, two steps after the epoch-end checkpoint.
    run = launch()
    run.wait_for(lambda: 3 in committed(workdir) and run.steps_shown() >= 5, "step 5")
    assert run.finish(signal.SIGKILL) == -signal.SIGKILL
    assert committed(workdir) == [3]

    # Evaluation, at the end of epoch 2.
    run = launch()
    run.wait_for(lambda: "epoch 2/3 evaluating" in run.stderr, "evaluation")
    assert run.finish(signal.SIGKILL) == -signal.SIGKILL
    assert "resuming from the checkpoint at step 3 (1 epochs done)" in run.stderr
    assert committed(workdir) == [3]
    assert len(metrics_without_timing(workdir)) == 1

    # An asynchronous save: killed while orbax writes the epoch-end checkpoint of step 6.
    run = launch()
    run.wait_for(lambda: any((workdir / "checkpoints").glob("6.orbax-checkpoint-tmp*")),
                 "the save of step 6")
    assert run.finish(signal.SIGKILL) == -signal.SIGKILL
    assert committed(workdir) == [3]

    # Ctrl-C twice: the second ends the run at once, whatever the first one was waiting for.
    run = launch()
    run.wait_for(lambda: run.steps_shown() >= 3, "training")
    run.process.send_signal(signal.SIGINT)
    run.wait_for(lambda: "SIGINT received" in run.stderr, "the first Ctrl-C")
    assert run.finish(signal.SIGINT) == -signal.SIGINT
    assert "stopped by SIGINT" not in run.stderr

    # Ctrl-C once, in epoch 3: the step finishes, is saved, and the run exits with 130.
    run = launch()
    run.wait_for(lambda: run.steps_shown() >= 7, "step 7")
    assert run.finish(signal.SIGINT) == 130, run.stderr
    stopped = re.search(r"stopped by SIGINT at step (\d+) and saved; run the same command "
                        r"again to resume", run.stderr)
    assert stopped, run.stderr
    assert int(stopped[1]) in committed(workdir)

    run = launch()
    assert run.finish() == 0, run.stderr
    assert f"resuming from the checkpoint at step {stopped[1]} (2 epochs done" in run.stderr
    assert state_checksum(workdir) == state_checksum(reference)
    assert metrics_without_timing(workdir) == metrics_without_timing(reference)


@pytest.mark.slow
def test_cv_rerun_resumes_the_fold_it_was_in(reference, cache, tmp_path):
    """Killed after fold 2's first epoch; the rerun skips fold 1, resumes fold 2 from its
    checkpoint and reports what an uninterrupted cv run (alongside) reports."""
    data = reference.parent / "data"
    flags = ("--mode=cv", "--config.data.num_folds=2", "--config.num_epochs=2")
    uninterrupted = Launch(tmp_path / "uninterrupted", data, cache, *flags)
    workdir, fold_2 = tmp_path / "cv", tmp_path / "cv" / "fold_1"

    def first_epoch_saved() -> bool:
        epochs = metrics_without_timing(fold_2) if (fold_2 / "metrics.jsonl").exists() else []
        return bool(epochs) and epochs[0]["step"] in committed(fold_2)

    run = Launch(workdir, data, cache, *flags)
    run.wait_for(first_epoch_saved, "the end of fold 2's first epoch")
    assert run.finish(signal.SIGKILL) == -signal.SIGKILL
    assert not (fold_2 / "report.json").exists()
    killed_at = max(committed(fold_2))

    rerun = Launch(workdir, data, cache, *flags)
    assert rerun.finish() == 0, rerun.stderr
    assert uninterrupted.finish() == 0, uninterrupted.stderr
    assert "fold 1/2: finished before" in rerun.stderr
    assert f"resuming from the checkpoint at step {killed_at} (1 epochs done" in \
        rerun.stderr.split("fold 2/2 in")[1]
    assert json.loads((workdir / "cv_report.json").read_text()) == json.loads(
        (tmp_path / "uninterrupted" / "cv_report.json").read_text())


@pytest.mark.slow
def test_a_resume_that_would_change_what_the_state_means_stops_naming_it(reference, cache,
                                                                          tmp_path):
    """Data source (another one, or the synthetic one's recordings), classes, input size,
    optimizer kind, the split and the log-mel settings: each stops the resumed run with one line naming it before any data is
    read, leaving the workdir as it was."""
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    before = {name: (workdir / name).read_text() for name in ("config.json", "metrics.jsonl")}
    changes = {
        "config.data.name": "--config.data.name=synthetic_heart_rate",
        "config.data.classes": "--config.data.classes=('extrastole','murmur','normal')",
        "config.data.synthetic.num_per_class":
            "--config.data.synthetic.num_per_class=(('normal',8),('murmur',6))",
        "config.data.image_size": "--config.data.image_size=(48,48)",
        "config.optimizer.name": "--config.optimizer.name=adamw",
        "config.data.split_seed": "--config.data.split_seed=1",
        "config.audio.n_mels": "--config.audio.n_mels=64",
    }
    runs = {named: Launch(workdir, reference.parent / "data", cache, flag)
            for named, flag in changes.items()}
    for named, run in runs.items():
        assert run.finish() == 2, run.stderr
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith("cnnjax: error: ") and named in last, run.stderr
        assert "Traceback" not in run.stderr and "validation examples" not in run.stderr
    assert {name: (workdir / name).read_text() for name in before} == before
    assert committed(workdir) == committed(reference)
