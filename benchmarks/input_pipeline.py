"""Input pipeline throughput at the default experiment's settings, beside the train step's
consumption rate.

    python -m benchmarks.input_pipeline [--out benchmarks/results/input_pipeline.json]

Measures, in one process on the same synthetic recordings: spectrograms per second with a
cold feature cache (librosa on the host, and the JAX frontend), with a warm cache (read back
from disk), the grain training pipeline's examples per second (windows, augmentation,
batching) and host CPU time per example, the same for the device-side path
(`config.augment.on_device`: the host hands over indices and seeds) with the rate at which
the device (here the CPU itself) builds those windows, and the examples per second the jitted
train step of the default model consumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from benchmarks.timing import step_times
from cnnjax.data.datasets import (Datasets, get_datasets, load_recordings, mel_settings,
                                  spectrograms)
from cnnjax.data.feature_cache import FeatureCache
from cnnjax.models import get_model
from cnnjax.parallel import DataParallel
from cnnjax.train import create_train_state, jit_train_step, make_optimizer
from experiments import heartbeat_synthetic


def timed(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall time of `fn` over `repeats` runs (no warm-up: the first run counts)."""
    return float(np.median(step_times(fn, repeats, warmup=0)))


def handed_over(datasets: Datasets, epochs: int = 5) -> tuple[float, float]:
    """Training examples per second the host hands over (batches made, not placed), and
    the host CPU microseconds each costs, over `epochs` epochs after a warm-up one."""
    sum(1 for _ in datasets.train_batches(0))
    wall, cpu = time.perf_counter(), time.process_time()
    count = sum(b["label"].shape[0] for epoch in range(1, epochs + 1)
                for b in datasets.train_batches(epoch))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return count / wall, cpu / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/input_pipeline.json")
    args = parser.parse_args()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = heartbeat_synthetic.get_config()
        config.data.data_dir = tmp
        recordings = load_recordings(config.data, log=lambda _: None)
        n = len(recordings.records)
        mel = mel_settings(config)
        settings = dataclasses.asdict(mel)
        for frontend in ("librosa", "jax"):
            spectrograms(recordings, mel, FeatureCache(None, settings), frontend)  # warm-up
            seconds = timed(lambda: spectrograms(recordings, mel, FeatureCache(None, settings),
                                                 frontend))
            results[f"features_cold_{frontend}_examples_per_s"] = n / seconds
        cache_dir = Path(tmp) / "features"
        spectrograms(recordings, mel, FeatureCache(cache_dir, settings))
        seconds = timed(lambda: spectrograms(recordings, mel, FeatureCache(cache_dir, settings)))
        results["features_warm_cache_examples_per_s"] = n / seconds

        datasets = get_datasets(config)
        rate, cpu = handed_over(datasets)
        results["pipeline_train_examples_per_s"] = rate
        results["pipeline_train_host_cpu_us_per_example"] = cpu
        config.augment.on_device = True
        on_device = get_datasets(config)
        rate, cpu = handed_over(on_device)
        results["device_side_host_examples_per_s"] = rate
        results["device_side_host_cpu_us_per_example"] = cpu
        parallel = DataParallel(device_windows=on_device.device_windows)
        index_batch = next(iter(on_device.train_batches(1)))
        jax.block_until_ready(parallel.put_train_batch(index_batch))  # compiles
        seconds = timed(lambda: jax.block_until_ready(parallel.put_train_batch(index_batch)), 5)
        results["device_side_windows_built_examples_per_s"] = config.batch_size / seconds

        model = get_model(config.model, num_classes=len(datasets.class_names))
        shapes = jax.eval_shape(lambda: model.init(
            jax.random.PRNGKey(0), jax.numpy.zeros((1, *datasets.input_shape))))["params"]
        tx, _ = make_optimizer(config.optimizer, 100, shapes)
        state = create_train_state(model, tx, datasets.input_shape, jax.random.PRNGKey(0))
        batch = next(iter(datasets.train_batches(1)))
        state, metrics = jit_train_step(state, batch)
        jax.block_until_ready(metrics)
        steps = 5
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = jit_train_step(state, batch)
        jax.block_until_ready(metrics)
        results["train_step_examples_per_s"] = steps * config.batch_size / (
            time.perf_counter() - start)
    results = {k: round(v, 1) for k, v in results.items()}
    for key, value in results.items():
        print(f"{key:45s} {value:10.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": jax.devices()[0].device_kind, "examples": n,
                               **results}, indent=2))


if __name__ == "__main__":
    main()
