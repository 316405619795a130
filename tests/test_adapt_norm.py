"""Test-time BatchNorm adaptation: torch's `update_bn` statistics, every validation window
used once (padding never), and a run whose evaluations use the adapted statistics while its
checkpoints keep the trained ones."""

from __future__ import annotations

import copy
import json

import jax
import numpy as np
import pytest

from cnnjax import models
from cnnjax.data import get_datasets
from cnnjax.evaluation import evaluate_checkpoint
from cnnjax.parallel import DataParallel
from cnnjax.pretrained import load_torchvision
from cnnjax.train.adapt_norm import (adapted, average_statistics, shuffled_batches,
                                     validation_windows)
from cnnjax.train.loop import train_and_evaluate
from cnnjax.train.state import inference_state
from cnnjax.train.steps import norm_stats_step
from test_data import tiny_config  # noqa: F401  (a fixture)
from test_pretrained import RTOL_TRAIN, max_rel_error, torchvision_resnet


def test_statistics_match_torch_update_bn():
    torch = pytest.importorskip("torch")
    torch_model = torchvision_resnet("resnet18", seed=4)
    rng = np.random.default_rng(3)
    batches = [rng.normal(1.0, 2.0, size=(4, 40, 56, 3)).astype(np.float32) for _ in range(3)]
    torch_adapted = copy.deepcopy(torch_model)
    torch.optim.swa_utils.update_bn(
        [torch.from_numpy(b.transpose(0, 3, 1, 2).copy()) for b in batches], torch_adapted)
    expected = load_torchvision(torch_adapted.state_dict(), "resnet18")["batch_stats"]

    trained = load_torchvision(torch_model.state_dict(), "resnet18")
    state = inference_state(models.resnet18(), trained)
    step = jax.jit(norm_stats_step)
    got = average_statistics(batches, lambda images: step(state, {"image": images}))
    errors = jax.tree.leaves(jax.tree.map(max_rel_error, got, expected))
    assert max(errors) <= RTOL_TRAIN
    # The trained statistics are far from the adapted ones: the comparison has teeth.
    assert max_rel_error(trained["batch_stats"]["bn1"]["mean"], expected["bn1"]["mean"]) > 0.1


def _real_windows(datasets) -> np.ndarray:
    return np.concatenate([b["image"][b["mask"]] for b in datasets.eval_batches()])


def _rows_sorted(windows: np.ndarray) -> list[bytes]:
    return sorted(row.tobytes() for row in windows)


def test_every_validation_window_once_in_shuffled_batches(tiny_config):
    datasets = get_datasets(tiny_config)
    real = _real_windows(datasets)
    assert len(real) % 5 and len(real) > 5 * 8  # a short last batch, more than one run of 8
    batches = list(shuffled_batches(validation_windows(datasets), batch_size=5))
    assert [len(b) for b in batches] == [5] * (len(real) // 5) + [len(real) % 5]
    windows = np.concatenate(batches)
    assert _rows_sorted(windows) == _rows_sorted(real)
    assert not np.array_equal(windows, real)  # shuffled
    # On four devices a short batch is cut to a multiple of four, here to nothing.
    assert len(real) % 4
    four = list(shuffled_batches(validation_windows(datasets), batch_size=4, multiple=4))
    assert [len(b) for b in four] == [4] * (len(real) // 4)


def test_first_norm_mean_is_the_mean_of_its_input_over_every_window(tiny_config):
    datasets = get_datasets(tiny_config)
    model = models.resnet18(num_classes=3, in_channels=1)
    state = inference_state(model, model.init(jax.random.PRNGKey(0),
                                              np.zeros((1, *datasets.input_shape)), train=False))
    parallel = DataParallel("jit")
    adapted_state = adapted(parallel.place(state), validation_windows(datasets), parallel,
                            batch_size=4)
    conv1 = jax.lax.conv_general_dilated(
        _real_windows(datasets), state.params["conv1"]["kernel"], (2, 2), ((3, 3), (3, 3)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(adapted_state.batch_stats["bn1"]["mean"],
                               np.asarray(conv1, np.float64).mean((0, 1, 2)), rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(adapted_state.batch_stats["layer4_1"]["bn2"]["var"], 1.0)  # every layer


def _probabilities(workdir) -> np.ndarray:
    """The validation recordings' class probabilities the last report wrote."""
    rows = (workdir / "val_predictions.csv").read_text().splitlines()[1:]
    return np.array([[float(x) for x in row.split(",")[2:]] for row in rows])


def test_a_run_evaluates_adapted_and_keeps_the_trained_statistics(tiny_config, tmp_path):
    workdir = tmp_path / "run"
    tiny_config.num_epochs = 1
    tiny_config.adapt_batch_norm = True
    report = train_and_evaluate(tiny_config, workdir)
    assert json.loads((workdir / "report.json").read_text()) == report
    trained_run = _probabilities(workdir)
    assert evaluate_checkpoint(tiny_config, workdir) == report
    np.testing.assert_allclose(_probabilities(workdir), trained_run, rtol=1e-5, atol=1e-7)
    tiny_config.adapt_batch_norm = False
    evaluate_checkpoint(tiny_config, workdir)
    # Adapted statistics come from the batches alone, whatever the state held: had the
    # checkpoint stored them, evaluating it as saved would give the same probabilities.
    assert np.abs(_probabilities(workdir) - trained_run).max() > 1e-3
