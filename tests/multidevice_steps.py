"""Run by test_parallel.py in a subprocess with two host devices: three train steps of a small
BatchNorm CNN on the same global batches, on one device, under jit over a 2-device mesh and
under pmap. Prints JSON: each way's losses and accuracies, its final parameters and
BatchNorm statistics (flattened), those statistics re-estimated on other inputs
(`config.adapt_batch_norm`), what the jit state and batch were placed on, and the training
images `config.augment.on_device` builds from one batch of indices and seeds."""

import json
import sys

import jax
import numpy as np
import optax

from cnnjax.data.device_windows import DeviceWindows, resident_spectrograms
from cnnjax.data.pipeline import AugmentSettings, ImageSettings
from cnnjax.models import SimpleCNN
from cnnjax.parallel import DataParallel
from cnnjax.train.adapt_norm import adapted, average_statistics, shuffled_batches
from cnnjax.train.state import create_train_state
from cnnjax.train.losses import Loss
from cnnjax.train.steps import jit_train_step, norm_stats_step

# Inputs to adapt to: 20 windows in batches of 8, 8 and 4.
ADAPT_TO = np.random.default_rng(2).normal(1.0, 2.0, size=(20, 12, 12, 1)).astype(np.float32)


def batches(count: int = 3, size: int = 8) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"image": rng.normal(size=(size, 12, 12, 1)).astype(np.float32),
             "label": rng.integers(0, 3, size).astype(np.int32)} for _ in range(count)]


def flat(tree) -> list[float]:
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)]).tolist()


def run(mode: str, loss: Loss) -> dict:
    model = SimpleCNN(num_classes=3, widths=(4, 8), dense=(16,), in_channels=1,
                      batch_norm=True, norm_axis_name="data" if mode == "pmap" else None)
    state = create_train_state(model, optax.adam(1e-2), (12, 12, 1), jax.random.PRNGKey(0))
    losses, accuracies, placed = [], [], {}
    if mode == "single":
        for batch in batches():
            state, metrics = jit_train_step(state, batch, loss=loss)
            losses.append(float(metrics["loss"]))
            accuracies.append(float(metrics["accuracy"]))
        step = jax.jit(norm_stats_step)
        adapted_stats = average_statistics(shuffled_batches([ADAPT_TO], 8, multiple=2),
                                           lambda images: step(state, {"image": images}))
    else:
        parallel = DataParallel(mode, loss)
        state = parallel.place(state)
        for batch in batches():
            device_batch = parallel.put_batch(batch)
            placed = {"batch_devices": len(device_batch["image"].sharding.device_set),
                      "param_devices": len(jax.tree.leaves(state.params)[0].sharding.device_set)}
            state, metrics = parallel.train_step(state, device_batch)
            losses.append(float(metrics["loss"]))
            accuracies.append(float(metrics["accuracy"]))
        adapted_stats = parallel.saveable(adapted(state, [ADAPT_TO], parallel, 8)).batch_stats
        state = parallel.saveable(state)
    return {"losses": losses, "accuracies": accuracies, "params": flat(state.params),
            "batch_stats": flat(state.batch_stats), "adapted": flat(adapted_stats), **placed}


def device_windows(mode: str) -> list[float]:
    """One batch of windows built on the devices: randomly cropped, gained and masked."""
    rng = np.random.default_rng(1)
    spectrograms = [rng.uniform(-80, 0, (10, n)).astype(np.float32) for n in range(12, 30, 3)]
    windows = DeviceWindows(resident_spectrograms(spectrograms, 16),
                            ImageSettings(crop_frames=16, image_size=(8, 12)),
                            AugmentSettings(gain_db=3.0, freq_masks=1, freq_mask_width=3,
                                            time_masks=1, time_mask_width=4))
    batch = {"index": np.array([5, 0, 3, 1], np.int32), "label": np.zeros(4, np.int32),
             "seed": np.array([7, 8, 9, 10], np.uint32)}
    if mode == "single":
        images = jax.jit(windows)(jax.tree.map(jax.numpy.asarray, windows.resident),
                                  batch)["image"]
    else:
        images = DataParallel(mode, device_windows=windows).put_train_batch(batch)["image"]
    return np.ravel(np.asarray(images)).tolist()


if __name__ == "__main__":
    assert jax.device_count() == 2, jax.devices()
    weighted = Loss(label_smoothing=0.1, class_weights=(1.0, 2.0, 3.0))
    json.dump({mode: {**run(mode, weighted), "windows": device_windows(mode)}
               for mode in ("single", "jit", "pmap")}, sys.stdout)
