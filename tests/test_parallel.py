"""Data parallelism: jit over a mesh and pmap agree with one device, several processes agree
with one process, gradient accumulation equals the large batch, bf16 keeps float32 state."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import optax
import pytest

from conftest import REPO
from cnnjax.checkpoint import read_variables
from cnnjax.data.pipeline import ProcessShareSampler, epoch_order
from cnnjax.errors import ConfigError
from cnnjax.models import SimpleCNN
from cnnjax.parallel import check_batch_sizes, initialize_distributed
from cnnjax.train.phases import training_phases
from cnnjax.train.recipe import phase_setup
from cnnjax.train.state import create_train_state
from cnnjax.train.losses import Loss
from cnnjax.train.steps import train_step

TWO_DEVICES = "--xla_force_host_platform_device_count=2"


def subprocess_env(tmp_path, devices_flag: str = "") -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), CNNJAX_DATA_DIR=str(tmp_path / "data"),
                XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {devices_flag}".strip(),
                JAX_PLATFORMS="cpu")


def test_jit_mesh_and_pmap_match_one_device_on_the_same_global_batches(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "tests" / "multidevice_steps.py")],
                            env=subprocess_env(tmp_path, TWO_DEVICES), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    single = runs["single"]
    for mode in ("jit", "pmap"):
        run = runs[mode]
        assert run["batch_devices"] == 2 and run["param_devices"] == 2, mode
        np.testing.assert_allclose(run["losses"], single["losses"], rtol=1e-6, err_msg=mode)
        assert run["accuracies"] == single["accuracies"], mode
        # BatchNorm saw the global batch and gradients were summed over both devices.
        np.testing.assert_allclose(run["params"], single["params"], atol=1e-6, err_msg=mode)
        np.testing.assert_allclose(run["batch_stats"], single["batch_stats"], atol=1e-6,
                                   err_msg=mode)
        # Adapted statistics are the global batches' too (and not the trained ones).
        np.testing.assert_allclose(run["adapted"], single["adapted"], rtol=1e-5, atol=1e-6,
                                   err_msg=mode)
        assert not np.allclose(run["adapted"], run["batch_stats"], atol=1e-2), mode
        # Windows built on the devices depend on each example's seed alone, not its device.
        np.testing.assert_allclose(run["windows"], single["windows"], atol=1e-6, err_msg=mode)


def weighted_mixup_batch(size: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.normal(size=(size, 10, 10, 1)).astype(np.float32),
            "label": rng.integers(0, 3, size).astype(np.int32),
            "mix_label": rng.integers(0, 3, size).astype(np.int32),
            "mix_weight": rng.uniform(0.3, 1.0, size).astype(np.float32)}


def test_gradient_accumulation_gives_the_large_batch_update():
    model = SimpleCNN(num_classes=3, widths=(4,), dense=(8,), in_channels=1)
    loss = Loss(label_smoothing=0.1, class_weights=(0.5, 1.0, 4.0))
    state = create_train_state(model, optax.adam(1e-2), (10, 10, 1), jax.random.PRNGKey(0))
    batch = weighted_mixup_batch()
    whole, whole_metrics = jax.jit(train_step, static_argnames=("loss", "grad_accum_steps"))(
        state, batch, loss=loss)
    parts, parts_metrics = jax.jit(train_step, static_argnames=("loss", "grad_accum_steps"))(
        state, batch, loss=loss, grad_accum_steps=4)
    # The weighted loss divides by the whole batch's summed weights, not each part's.
    np.testing.assert_allclose(parts_metrics["loss"], whole_metrics["loss"], rtol=1e-6)
    np.testing.assert_allclose(parts_metrics["accuracy"], whole_metrics["accuracy"])
    for a, b in zip(jax.tree.leaves(parts.params), jax.tree.leaves(whole.params)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    moved = max(float(np.abs(a - b).max()) for a, b in
                zip(jax.tree.leaves(whole.params), jax.tree.leaves(state.params)))
    assert moved > 1e-3  # the step did update the parameters


def test_gradient_accumulation_threads_batchnorm_statistics_through_the_parts():
    model = SimpleCNN(num_classes=3, widths=(4,), dense=(), in_channels=1, batch_norm=True)
    state = create_train_state(model, optax.sgd(0.0), (10, 10, 1), jax.random.PRNGKey(0))
    batch = weighted_mixup_batch()
    batch = {"image": batch["image"], "label": batch["label"]}
    stepped, _ = train_step(state, batch, grad_accum_steps=2)
    # Two running-average updates, one per half, in order (momentum 0.9, torch's rule).
    expected = state
    for half in (slice(0, 4), slice(4, 8)):
        expected, _ = train_step(expected, {k: v[half] for k, v in batch.items()})
    np.testing.assert_allclose(stepped.batch_stats["bn1"]["mean"],
                               expected.batch_stats["bn1"]["mean"], atol=1e-6)
    np.testing.assert_allclose(stepped.batch_stats["bn1"]["var"],
                               expected.batch_stats["bn1"]["var"], atol=1e-6)


def experiment_config(**overrides) -> ml_collections.ConfigDict:
    from cnnjax.config import sibling_config
    config = sibling_config(str(REPO / "experiments" / "x.py"), "heartbeat_synthetic")
    config.model.name = "resnet18"
    for key, value in overrides.items():
        config[key] = value
    return config


def test_bfloat16_computes_in_bf16_and_keeps_float32_state():
    config = experiment_config(dtype="bfloat16")
    phase = training_phases(config)[0]
    setup = phase_setup(config, phase, 3, (32, 32, 1), steps_per_epoch=4)
    state = create_train_state(setup.model, setup.tx, (32, 32, 1), jax.random.PRNGKey(0))
    images = np.random.default_rng(0).normal(size=(4, 32, 32, 1)).astype(np.float32)
    logits = state.apply_fn(state.variables, images, train=False)
    assert logits.dtype == np.dtype("bfloat16")
    for tree in (state.params, state.batch_stats, state.opt_state):
        assert {x.dtype for x in jax.tree.leaves(tree) if x.dtype.kind == "f"} == \
            {np.dtype("float32")}
    batch = {"image": images, "label": np.array([0, 1, 2, 0], np.int32)}
    stepped, metrics = train_step(state, batch)
    assert {x.dtype for x in jax.tree.leaves(stepped.params)} == {np.dtype("float32")}

    float32 = phase_setup(experiment_config(), phase, 3, (32, 32, 1), steps_per_epoch=4)
    reference = create_train_state(float32.model, float32.tx, (32, 32, 1),
                                   jax.random.PRNGKey(0))
    _, reference_metrics = train_step(reference, batch)
    assert metrics["loss"].dtype == np.float32
    np.testing.assert_allclose(metrics["loss"], reference_metrics["loss"], rtol=3e-2)


def test_batch_sizes_are_global_and_must_split_over_devices_and_parts():
    check_batch_sizes(16, 64, 2, devices=8)
    with pytest.raises(ConfigError, match=r"config.batch_size=12 is global.*8 device\(s\)"):
        check_batch_sizes(12, 64, 1, devices=8)
    with pytest.raises(ConfigError, match="x 4 accumulation step"):
        check_batch_sizes(16, 64, 4, devices=8)
    with pytest.raises(ConfigError, match="eval_batch_size=10"):
        check_batch_sizes(16, 10, 1, devices=4)


def test_partial_multi_process_settings_are_a_config_error(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="needs all three"):
        initialize_distributed("localhost:1234", 0, -1)
    assert initialize_distributed() is False  # nothing says this is a multi-process run


def test_process_shares_make_up_the_single_process_batches():
    labels = np.arange(21) % 3
    whole = ProcessShareSampler(epoch_order(labels, seed=5), len(labels), 6)
    shares = [ProcessShareSampler(epoch_order(labels, seed=5), len(labels), 6,
                                  process_index=p, process_count=3) for p in range(3)]
    assert len(whole) == 18 and all(len(share) == 6 for share in shares)
    for batch in range(3):
        expected = [whole[batch * 6 + i] for i in range(6)]
        got = [shares[p][batch * 2 + i] for p in range(3) for i in range(2)]
        assert [m.record_key for m in got] == [m.record_key for m in expected]
        # Each record's window and augmentations come from the same generator.
        assert [m.rng.random() for m in got] == [m.rng.random() for m in expected]
    with pytest.raises(IndexError):
        shares[0][6]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


TINY = ["--config.num_epochs=1", "--config.batch_size=4", "--config.eval_batch_size=8",
        "--config.data.image_size=(32,32)", "--config.data.crop_seconds=1.0",
        "--config.data.synthetic.num_per_class=(('normal',8),('murmur',6),('extrastole',6))",
        "--config.model.name=resnet18", "--config.log_every_steps=1"]


def final_params(workdir) -> list[np.ndarray]:
    """Read on this one-device process, whatever topology saved them."""
    checkpoints = workdir / "checkpoints"
    step = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    saved = read_variables(checkpoints / str(step))
    return [np.asarray(x) for x in jax.tree.leaves(saved["params"])]


def run_two_processes(workdir, *flags) -> list[tuple[str, str]]:
    port = free_port()
    workers = [subprocess.Popen(
        [sys.executable, "-m", "cnnjax.main", f"--workdir={workdir}", *TINY, *flags,
         f"--coordinator_address=localhost:{port}", "--num_processes=2",
         f"--process_id={index}"], cwd=REPO, env=subprocess_env(workdir.parent),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for index in range(2)]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr
    return outputs


def run_one_process(workdir, *flags) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnjax.main", f"--workdir={workdir}", *TINY,
                           *flags], cwd=REPO, env=subprocess_env(workdir.parent, TWO_DEVICES),
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_two_processes_train_like_one_process_with_two_devices(tmp_path, mode):
    # The reference runs the same mode: jit and pmap agree to float32 rounding, which Adam
    # turns into +-lr steps where a gradient is zero up to rounding (see the step test).
    one = run_one_process(tmp_path / "one", f"--config.parallel={mode}")
    assert one.returncode == 0, one.stderr
    assert "2 cpu device(s)" in one.stderr
    one_metrics = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").open()]

    workdir = tmp_path / "two"
    (chief_out, chief_err), (other_out, other_err) = run_two_processes(
        workdir, f"--config.parallel={mode}")
    assert "2 cpu device(s)" in chief_err
    assert "Validation" in chief_out and "Validation" not in other_out  # one writer
    assert "epoch 1:" in chief_err and "epoch 1:" not in other_err
    two_metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").open()]
    assert [m["step"] for m in two_metrics] == [m["step"] for m in one_metrics]
    for key in ("train_loss", "val_loss", "val_accuracy"):
        assert two_metrics[-1][key] == pytest.approx(one_metrics[-1][key], rel=1e-5), key
    for a, b in zip(final_params(workdir), final_params(tmp_path / "one")):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow
def test_a_preempted_process_and_the_other_save_the_same_step_together(tmp_path):
    workdir = tmp_path / "two"
    port = free_port()
    workers = [subprocess.Popen(
        [sys.executable, "-m", "cnnjax.main", f"--workdir={workdir}", *TINY,
         "--config.num_epochs=50", f"--coordinator_address=localhost:{port}",
         "--num_processes=2", f"--process_id={index}"], cwd=REPO,
        env=subprocess_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for index in range(2)]
    try:
        checkpoints = workdir / "checkpoints"
        deadline = time.monotonic() + 240
        while not any(checkpoints.glob("*/commit_success.txt")):  # the first epoch's
            assert all(worker.poll() is None for worker in workers)
            assert time.monotonic() < deadline, "the run never saved its first epoch"
            time.sleep(0.05)
        workers[1].send_signal(signal.SIGTERM)  # the notice reaches one process only
        outputs = [worker.communicate(timeout=120) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert [worker.returncode for worker in workers] == [143, 143], outputs
    chief_err = outputs[0][1]
    stopped_at = int(chief_err.split("stopped by SIGTERM at step ")[1].split()[0])
    saved = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert saved[-1] == stopped_at
    assert (checkpoints / str(stopped_at) / "commit_success.txt").exists()
