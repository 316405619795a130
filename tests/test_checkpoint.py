"""Checkpoints and fault tolerance, with real orbax on temporary folders and real
subprocesses that are killed, interrupted and resumed."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from cnnjax.checkpoint import (CheckpointError, Checkpoints, install_log_filters,
                               read_variables)
from cnnjax.models import SimpleCNN
from cnnjax.train import create_train_state
from conftest import REPO

# 14 training recordings in batches of 4: 3 steps per epoch, a checkpoint after every step.
TINY = ["--config.num_epochs=3", "--config.batch_size=4", "--config.eval_batch_size=8",
        "--config.data.image_size=(32,32)", "--config.data.crop_seconds=1.0",
        "--config.data.synthetic.num_per_class=(('normal',8),('murmur',6),('extrastole',6))",
        "--config.checkpoint.every_steps=1", "--config.checkpoint.max_to_keep=3",
        "--config.augment.freq_masks=1", "--config.augment.gain_db=3.0"]
FINAL_STEP = 9


def command(workdir, *extra):
    return [sys.executable, "-m", "cnnjax.main", f"--workdir={workdir}", *TINY, *extra]


def environment(tmp_path):
    return dict(os.environ, CNNJAX_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(REPO))


def run(tmp_path, workdir, *extra, timeout=300):
    return subprocess.run(command(workdir, *extra), cwd=REPO, env=environment(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


def state_checksum(workdir, step=FINAL_STEP) -> str:
    """SHA-256 over every array of the saved train state, in a fixed order."""
    with ocp.StandardCheckpointer() as checkpointer:
        tree = checkpointer.restore(workdir / "checkpoints" / str(step) / "state")
    digest = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(tree)[0],
                             key=lambda item: jax.tree_util.keystr(item[0])):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()


def metrics_without_timing(workdir):
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in records]


def start_and_wait_for_step(tmp_path, workdir, step, *extra):
    """Starts a run and returns it once its checkpoint of `step` is complete."""
    process = subprocess.Popen(command(workdir, *extra), cwd=REPO, env=environment(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marker = workdir / "checkpoints" / str(step) / "commit_success.txt"
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the run never reached the step"
        time.sleep(0.01)
    return process


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("reference")
    workdir = tmp_path / "run"
    result = run(tmp_path, workdir)
    assert result.returncode == 0, result.stderr
    return tmp_path, workdir


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_bit_identical(uninterrupted, tmp_path):
    _, reference = uninterrupted
    workdir = tmp_path / "run"
    process = start_and_wait_for_step(tmp_path, workdir, 4)  # epoch 2, one step in
    process.send_signal(signal.SIGKILL)
    process.communicate()
    killed_at = max(int(p.name) for p in (workdir / "checkpoints").iterdir()
                    if p.name.isdigit())
    assert killed_at < FINAL_STEP
    resumed = run(tmp_path, workdir)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the checkpoint at step" in resumed.stderr
    expected, got = state_checksum(reference), state_checksum(workdir)
    print(f"\nkilled after the checkpoint of step {killed_at}; final state sha256: "
          f"uninterrupted {expected}, killed and resumed {got}")
    assert got == expected
    assert metrics_without_timing(workdir) == metrics_without_timing(reference)
    assert [r["epoch"] for r in metrics_without_timing(workdir)] == [1, 2, 3]


@pytest.mark.slow
def test_windows_built_on_the_device_resume_bit_identical_too(tmp_path):
    # Their randomness is each example's seed from grain's per-record generator, so the
    # iterator state saved with the checkpoint carries it as on the host path.
    on_device = "--config.augment.on_device=True"
    reference, workdir = tmp_path / "reference", tmp_path / "run"
    result = run(tmp_path, reference, on_device)
    assert result.returncode == 0, result.stderr
    process = start_and_wait_for_step(tmp_path, workdir, 4, on_device)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    resumed = run(tmp_path, workdir, on_device)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the checkpoint at step" in resumed.stderr
    assert state_checksum(workdir) == state_checksum(reference)
    assert metrics_without_timing(workdir) == metrics_without_timing(reference)


@pytest.mark.slow
def test_sigterm_saves_and_says_how_to_resume(uninterrupted, tmp_path):
    _, reference = uninterrupted
    workdir = tmp_path / "run"
    process = start_and_wait_for_step(tmp_path, workdir, 2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "stopped by SIGTERM at step" in stderr and "run the same command again" in stderr
    stopped_at = int(stderr.split("stopped by SIGTERM at step ")[1].split()[0])
    assert (workdir / "checkpoints" / str(stopped_at) / "commit_success.txt").exists()
    resumed = run(tmp_path, workdir)
    assert resumed.returncode == 0, resumed.stderr
    assert state_checksum(workdir) == state_checksum(reference)


def corrupt(step_dir):
    for path in (step_dir / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(path.read_bytes()[:10])


@pytest.mark.slow
def test_unreadable_checkpoints_are_skipped_and_none_readable_is_an_error(uninterrupted,
                                                                         tmp_path):
    source_tmp, reference = uninterrupted
    import shutil
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    corrupt(workdir / "checkpoints" / str(steps[-1]))
    (workdir / "checkpoints" / str(steps[-2]) / "commit_success.txt").unlink()
    result = run(source_tmp, workdir)
    assert result.returncode == 0, result.stderr
    assert f"skipping the unreadable checkpoint at step {steps[-1]}" in result.stderr
    assert f"skipping the unreadable checkpoint at step {steps[-2]}: incomplete" in result.stderr
    assert f"resuming from the checkpoint at step {steps[-3]}" in result.stderr
    for step in sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                       if p.name.isdigit()):
        corrupt(workdir / "checkpoints" / str(step))
    result = run(source_tmp, workdir)
    assert result.returncode == 1
    assert "holds checkpoints but none can be restored" in result.stderr.splitlines()[-1], result.stderr[-6000:]


@pytest.mark.slow
def test_config_changes_on_resume(uninterrupted, tmp_path):
    source_tmp, reference = uninterrupted
    import shutil
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    broken = run(source_tmp, workdir, "--config.model.name=resnet34")
    assert broken.returncode == 2
    assert "config.model.name was 'resnet18'" in broken.stderr
    more = run(source_tmp, workdir, "--config.num_epochs=4")
    assert more.returncode == 0, more.stderr
    assert "num_epochs: 3 -> 4" in more.stderr
    assert [r["epoch"] for r in metrics_without_timing(workdir)] == [1, 2, 3, 4]
    change = json.loads((workdir / "config_changes.jsonl").read_text().splitlines()[0])
    assert change == {"step": FINAL_STEP, "changes": {"num_epochs": [3, 4]}}


@pytest.mark.slow
def test_a_diverging_run_stops_naming_the_step_and_keeps_its_good_checkpoints(tmp_path):
    workdir = tmp_path / "run"
    result = run(tmp_path, workdir, "--config.optimizer.learning_rate=1e12",
                 "--config.optimizer.schedule=constant")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "training diverged at step" in last, last
    step = int(last.split(" at step ")[1].split()[0])
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert all(s < step for s in saved)


def tiny_state(seed=0):
    model = SimpleCNN(num_classes=2, widths=(4,), dense=(), in_channels=1, batch_norm=True)
    return create_train_state(model, optax.adam(1e-3), (8, 8, 1), jax.random.PRNGKey(seed))


def test_newest_and_best_checkpoints_are_kept(tmp_path):
    checkpoints = Checkpoints(tmp_path, max_to_keep=2, best_metric="val_accuracy")
    state = tiny_state()
    for step, accuracy in zip(range(1, 6), (0.5, 0.9, 0.6, 0.7, 0.8)):
        state = state.replace(step=state.step + 1)
        checkpoints.save(state, {"epoch": step}, metrics={"val_accuracy": accuracy})
    checkpoints.wait()
    assert checkpoints.all_steps() == [2, 4, 5]  # the best (0.9 at step 2) and the newest two
    checkpoints.close()
    # A resumed run (a new manager over the same folder) still knows which one is best,
    # and a save between epochs (no metrics) does not count as a candidate.
    resumed = Checkpoints(tmp_path, max_to_keep=2, best_metric="val_accuracy")
    for accuracy in (None, 0.6, 0.7):
        state = state.replace(step=state.step + 1)
        resumed.save(state, {}, metrics=None if accuracy is None else
                     {"val_accuracy": accuracy})
    resumed.wait()
    assert resumed.all_steps() == [2, 7, 8]
    resumed.close()


def test_non_finite_states_are_never_saved(tmp_path):
    checkpoints = Checkpoints(tmp_path)
    state = tiny_state()
    broken = state.replace(params=jax.tree.map(lambda x: x * np.nan, state.params))
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        checkpoints.save(broken, {})
    checkpoints.close()
    assert Checkpoints(tmp_path).all_steps() == []


def test_init_from_loads_weights_only(tmp_path):
    source = tiny_state(seed=1).replace(step=np.int32(7))
    checkpoints = Checkpoints(tmp_path / "checkpoints")
    checkpoints.save(source, {})
    checkpoints.wait()
    checkpoints.close()
    fresh = tiny_state(seed=2)
    loaded = fresh.replace(**read_variables(tmp_path, fresh.variables))
    jax.tree.map(np.testing.assert_array_equal, loaded.params, source.params)
    assert int(loaded.step) == 0
    other = create_train_state(SimpleCNN(num_classes=3, widths=(4,), dense=(), in_channels=1,
                                         batch_norm=True), optax.adam(1e-3), (8, 8, 1),
                               jax.random.PRNGKey(0))
    with pytest.raises(CheckpointError, match="do not fit this model"):
        read_variables(tmp_path, other.variables)
    # The same checkpoint named by its checkpoints folder or its own folder; without
    # shapes to fit, the variables as saved.
    for path in (tmp_path / "checkpoints", tmp_path / "checkpoints" / "7"):
        saved = read_variables(path)
        jax.tree.map(np.testing.assert_array_equal, saved["params"], source.params)
    with pytest.raises(CheckpointError, match="neither a workdir with checkpoints nor a "
                                              "checkpoint"):
        read_variables(tmp_path / "elsewhere", fresh.variables)


def test_init_from_a_run_starts_from_its_weights_or_names_the_field(tmp_path):
    from ml_collections import ConfigDict

    from cnnjax.train.warm_start import initial_state

    source = tiny_state(seed=1).replace(step=np.int32(7))
    checkpoints = Checkpoints(tmp_path / "run" / "checkpoints")
    checkpoints.save(source, {})
    checkpoints.close()
    config = ConfigDict({"init": {"pretrained": ""}, "init_from": str(tmp_path / "run")})
    state, said = initial_state(config, tiny_state(seed=2), num_classes=2, in_channels=1)
    jax.tree.map(np.testing.assert_array_equal, state.params, source.params)
    assert int(state.step) == 0 and said.startswith("starting from the weights of the run")
    config.init_from = str(tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match="^config.init_from: .*elsewhere is neither"):
        initial_state(config, tiny_state(seed=2), num_classes=2, in_channels=1)


def test_failed_reads_left_unretrieved_are_not_logged_after_our_message(caplog):
    """After a failed restore, tensorstore's other reads fail too; asyncio logs each when the
    future is garbage-collected, which can come after the run's last line."""
    import asyncio
    import gc

    install_log_filters()

    def abandon(exception):
        loop = asyncio.new_event_loop()
        future = loop.create_future()
        future.set_exception(exception)
        loop.close()
        del future
        gc.collect()

    with caplog.at_level("ERROR", logger="asyncio"):
        abandon(ValueError('OUT_OF_RANGE: Error reading "opt_state" [tensorstore_spec=...]'))
        assert not caplog.records
        abandon(ValueError("a failure of someone else's"))
        assert [r.getMessage().splitlines()[0] for r in caplog.records] == [
            "Future exception was never retrieved"]


def test_log_filters_are_installed_by_the_program_not_by_the_library(tmp_path):
    """Importing and using `cnnjax.checkpoint` changes no logger and no hook of the process;
    `install_log_filters` (which `main` calls) installs each filter once however often it
    is called."""
    code = f"""
import logging, sys
from cnnjax.checkpoint import Checkpoints, install_log_filters
hook = sys.unraisablehook
Checkpoints({str(tmp_path)!r}).close()
names = ("absl", "asyncio")
print([len(logging.getLogger(n).filters) for n in names], sys.unraisablehook is hook)
install_log_filters()
install_log_filters()
print([len(logging.getLogger(n).filters) for n in names], sys.unraisablehook is hook)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[0, 0] True", "[2, 1] False"]
