"""README promises that only the whole command can keep, each in real subprocesses:
`--mode=lr_find` writes its plot and suggests a rate, a run trained on two devices evaluates
and predicts on one, and a workdir that cannot be written (read-only, or on a full disk) ends
in one clear sentence without leaving a half-written checkpoint as the newest."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from cnnjax.checkpoint import Checkpoints
from cnnjax.data.datasets import get_datasets
from cnnjax.predict import saved_config
from cnnjax.train.lr_find import exponential_learning_rates, suggest

# The default experiment with a two-block SimpleCNN: the commands below compile and save in
# seconds where ResNet-18 takes a minute.
SMALL_CONFIG = f"""
import ml_collections
from cnnjax.config import sibling_config


def get_config():
    config = sibling_config({str(REPO / "experiments" / "heartbeat_synthetic.py")!r},
                            "heartbeat_synthetic")
    config.model = ml_collections.ConfigDict(dict(
        name="simple_cnn", in_channels=1, widths=(8, 16), pool="max", head_pool="gap",
        dense=(16,), batch_norm=True, dropout=0.0))
    return config
"""
TINY = ["--config.num_epochs=1", "--config.batch_size=4", "--config.eval_batch_size=8",
        "--config.data.image_size=(32,32)", "--config.data.crop_seconds=1.0",
        "--config.data.synthetic.num_per_class=(('normal',8),('murmur',6),('extrastole',6))"]
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """One folder for the module: the config file and the synthetic data, built once."""
    folder = tmp_path_factory.mktemp("promises")
    (folder / "small.py").write_text(SMALL_CONFIG)
    return folder


def cli(shared: Path, *args: str, devices: int = 1, prefix: Sequence[str] = (),
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m cnnjax.main *args` on `devices` host CPU devices, under `prefix`."""
    inherited = [flag for flag in os.environ.get("XLA_FLAGS", "").split()
                 if not flag.startswith(DEVICE_COUNT_FLAG)]
    if devices > 1:
        inherited.append(f"{DEVICE_COUNT_FLAG}={devices}")
    full_env = dict(os.environ, PYTHONPATH=str(REPO), CNNJAX_DATA_DIR=str(shared / "data"),
                    JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(inherited), **(env or {}))
    return subprocess.run([*prefix, sys.executable, "-m", "cnnjax.main", *args], cwd=REPO,
                          env=full_env, capture_output=True, text=True, timeout=300)


def small(shared: Path, workdir: Path, *args: str) -> list[str]:
    return [f"--config={shared / 'small.py'}", f"--workdir={workdir}", *TINY, *args]


@pytest.fixture(scope="module")
def trained(shared: Path) -> Path:
    """One epoch on two devices: its only checkpoint is the state its own (sharded) final
    evaluation judged."""
    workdir = shared / "trained"
    result = cli(shared, *small(shared, workdir), devices=2)
    assert result.returncode == 0, result.stderr
    assert "2 cpu device(s)" in result.stderr
    return workdir


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("cnnjax: error:")]


@pytest.mark.slow
def test_lr_find_writes_its_plot_and_prints_the_suggestion_it_recorded(shared, tmp_path):
    workdir = tmp_path / "lr"
    result = cli(shared, *small(shared, workdir, "--mode=lr_find",
                                "--config.lr_find.num_steps=40"))
    assert result.returncode == 0, result.stderr
    printed = re.search(r"lr_find: (\d+) steps, .*suggested learning rate (\S+) ",
                        result.stdout)
    assert printed, result.stdout
    steps, suggestion = int(printed.group(1)), float(printed.group(2))
    assert re.search(rf"lr_find: +\d+%\|.*\| {steps}/40 \[", result.stderr)  # its bar

    recorded = json.loads((workdir / "lr_find.json").read_text())
    rates = recorded["learning_rates"]
    assert len(rates) == steps == len(recorded["losses"]) == len(recorded["smoothed"])
    assert steps == 40 or recorded["diverged"]  # fewer steps only when the loss exploded
    np.testing.assert_allclose(rates, exponential_learning_rates(1e-7, 10.0, 40)[:steps],
                               rtol=1e-12)
    # The printed number is the recorded one (to its three digits), a rate that was swept,
    # and the one the valley rule picks from the recorded curve.
    assert suggestion == pytest.approx(recorded["suggestion"], rel=5e-3)
    assert recorded["suggestion"] in rates and 1e-7 <= suggestion <= 10.0
    finite = [(lr, s) for lr, s in zip(rates, recorded["smoothed"]) if math.isfinite(s)]
    assert recorded["suggestion"] == suggest([lr for lr, _ in finite], [s for _, s in finite])

    with Image.open(workdir / "lr_find.png") as image:
        assert image.size == (720, 480)  # 6 x 4 inches at 120 dpi
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    assert len(np.unique(pixels, axis=0)) > 50  # curves, axes and text, not a blank canvas
    red = np.abs(pixels - [214, 39, 40]).max(axis=1) < 8  # the suggestion's tab:red line
    assert red.sum() > 100
    assert not (workdir / "checkpoints").exists()  # the sweep never touches a checkpoint


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_trained_on_two_devices_evaluates_and_predicts_the_same_on_one(shared, trained,
                                                                       tmp_path):
    workdir = copy_run(trained, tmp_path / "run")
    two_device_report = json.loads((workdir / "report.json").read_text())
    two_device_top = rows(workdir / "top_losses.csv")
    (epoch,) = [json.loads(line) for line in (workdir / "metrics.jsonl").open()]

    evaluated = cli(shared, *small(shared, workdir, "--mode=eval"))
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"checkpoint at step {epoch['step']}" in evaluated.stdout
    # Eval-mode outputs are per example; only the per-device batch shape differs, which
    # changes XLA's summation order inside the convolutions: float32 rounding, no more.
    # Every count, and so every ratio in the report, is exact.
    assert json.loads((workdir / "report.json").read_text()) == two_device_report
    one_device_top = rows(workdir / "top_losses.csv")
    assert [(r["file"], r["predicted"]) for r in one_device_top] == \
        [(r["file"], r["predicted"]) for r in two_device_top]
    for one, two in zip(one_device_top, two_device_top):
        for column in ("predicted_probability", "actual_probability", "loss"):
            assert float(one[column]) == pytest.approx(float(two[column]), rel=1e-5)

    # predict reads the run's saved config and its checkpoint alone, on one device.
    config = saved_config(workdir)
    config.data.data_dir = str(shared / "data")
    datasets = get_datasets(config)
    recordings = {p.name: p for p in (shared / "data").glob("synthetic_heartbeat-*/set_b/*")}
    inputs = [str(recordings[Path(name).name]) for name in datasets.val_file_names]
    predicted = cli(shared, f"--workdir={workdir}", "--mode=predict",
                    f"--predict.inputs={','.join(inputs)}")
    assert predicted.returncode == 0, predicted.stderr
    table = rows(workdir / "predictions.csv")
    assert [r["file"] for r in table] == inputs and not any(r["error"] for r in table)
    names = list(datasets.class_names)
    truth = [names[label] for label in datasets.val.labels]
    accuracy = np.mean([r["predicted"] == actual for r, actual in zip(table, truth)])
    assert accuracy == epoch["val_accuracy"]
    nll = np.mean([-math.log(float(r[actual])) for r, actual in zip(table, truth)])
    assert nll == pytest.approx(epoch["val_loss"], rel=1e-5)


def read_only(path: Path, request: pytest.FixtureRequest) -> tuple[list[str], str]:
    """Makes `path` read-only for a command run under the returned prefix, and says what
    the system will answer a write with. chmod a-w stops a normal user; root ignores
    permissions, so for root `path` becomes a read-only bind mount in a private mount
    namespace (skipped where mounting is not allowed)."""
    if os.geteuid() != 0:
        locked = [path, *path.rglob("*")]
        for item in locked:
            item.chmod(item.stat().st_mode & ~0o222)

        def unlock() -> None:
            for item in locked:
                item.chmod(item.stat().st_mode | 0o200)

        request.addfinalizer(unlock)
        return [], "Permission denied"
    prefix = ["unshare", "--mount", "--", "sh", "-c",
              'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"', str(path)]
    if shutil.which("unshare") is None or subprocess.run(
            [*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root, whom chmod a-w does not stop, and a read-only bind "
                    "mount (unshare --mount) is not permitted here")
    return prefix, "Read-only file system"


def assert_one_clear_error(result: subprocess.CompletedProcess, path: Path,
                           reason: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = error_lines(result.stderr)
    assert str(path) in line and reason in line, line


@pytest.mark.slow
def test_read_only_workdir_of_an_existing_run_is_one_clear_error(shared, trained, tmp_path,
                                                                 request):
    workdir = copy_run(trained, tmp_path / "run")
    before = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
    prefix, reason = read_only(workdir, request)
    result = cli(shared, *small(shared, workdir, "--config.num_epochs=2"), prefix=prefix)
    assert_one_clear_error(result, workdir, reason)
    assert sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")) == before


@pytest.mark.slow
def test_fresh_workdir_under_a_read_only_folder_is_one_clear_error(shared, tmp_path,
                                                                   request):
    parent = tmp_path / "locked"
    parent.mkdir()
    prefix, reason = read_only(parent, request)
    result = cli(shared, *small(shared, parent / "run"), prefix=prefix)
    assert_one_clear_error(result, parent / "run", reason)
    assert not (parent / "run").exists()


# Inside a private mount namespace: a tmpfs of $DISK_SIZE bytes at $DISK holding a copy of
# the run in $RUN; then the command; then what it left on the disk copied to $LEFT.
FULL_DISK = ('mount -t tmpfs -o size="$DISK_SIZE" tmpfs "$DISK" && cp -a "$RUN/." "$DISK" '
             '|| exit 99\n"$@"; code=$?; cp -a "$DISK/." "$LEFT"; exit $code')
PAGE = 4096  # tmpfs allocates whole pages


def resume_on_full_disk(shared: Path, run: Path, tmp_path: Path, room: int
                        ) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """Resumes a copy of `run` for a second epoch on a disk with `room` bytes beyond the
    copy; returns the result, the disk's mount point and a copy of what was left on it."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a full disk needs a small tmpfs, and mounting one needs root")
    disk, left = tmp_path / "disk", tmp_path / "left"
    disk.mkdir()
    left.mkdir()
    used = sum(-(-p.stat().st_size // PAGE) * PAGE for p in run.rglob("*") if p.is_file())
    env = {"DISK": str(disk), "DISK_SIZE": str(used + room), "RUN": str(run),
           "LEFT": str(left)}
    result = cli(shared, *small(shared, disk, "--config.num_epochs=2"),
                 prefix=["unshare", "--mount", "--", "sh", "-c", FULL_DISK, "sh"], env=env)
    if result.returncode == 99:
        pytest.skip(f"mounting a tmpfs is not permitted here: {result.stderr.strip()}")
    return result, disk, left


@pytest.mark.slow
def test_full_disk_before_any_checkpoint_is_one_clear_error(shared, trained, tmp_path):
    # No room at all: the first small write fails, and such a write names no file.
    result, disk, left = resume_on_full_disk(shared, trained, tmp_path, room=0)
    assert_one_clear_error(result, disk, "No space left on device")
    assert sorted(p.name for p in (left / "checkpoints").iterdir()) == ["3"]


@pytest.mark.slow
def test_full_disk_during_a_checkpoint_is_one_clear_error_and_keeps_the_newest_good_one(
        shared, trained, tmp_path):
    # Room for the logs of one more epoch (a few pages), not for a checkpoint (dozens).
    result, disk, left = resume_on_full_disk(shared, trained, tmp_path, room=16 * PAGE)
    assert_one_clear_error(result, disk / "checkpoints", "No space left on device")
    assert "resume from the newest checkpoint, step 3" in result.stderr
    # The step-6 save died; step 3 is still the newest, complete and readable, and with
    # space again the same command resumes from it, as the message says.
    saved = sorted(p.name for p in (left / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == ["3"]
    checkpoints = Checkpoints(left / "checkpoints")
    try:
        assert checkpoints.latest_step() == 3
        assert checkpoints.read_extra(3)["history"][-1]["step"] == 3
    finally:
        checkpoints.close()
    again = cli(shared, *small(shared, left, "--config.num_epochs=2"))
    assert again.returncode == 0, again.stderr
    assert "resuming from the checkpoint at step 3" in again.stderr
    assert sorted(p.name for p in (left / "checkpoints").iterdir()) == ["3", "6"]
