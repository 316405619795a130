"""Input pipeline throughput at the default experiment's settings, beside the train step's
consumption rate.

    python -m benchmarks.input_pipeline [--out benchmarks/results/input_pipeline.json]

Measures, in one process on the same synthetic recordings: spectrograms per second with a
cold feature cache (librosa on the host, and the JAX frontend), with a warm cache (read back
from disk), the grain training pipeline's examples per second (windows, augmentation, batching),
and the examples per second the jitted train step of the default model consumes.
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
from cnnjax.data.datasets import (get_datasets, load_recordings, mel_settings, spectrograms)
from cnnjax.data.feature_cache import FeatureCache
from cnnjax.models import get_model
from cnnjax.train import create_train_state, jit_train_step, make_optimizer
from experiments import heartbeat_synthetic


def timed(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall time of `fn` over `repeats` runs (no warm-up: the first run counts)."""
    return float(np.median(step_times(fn, repeats, warmup=0)))


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
        for epoch in (1, 2):  # the first epoch warms grain up
            start = time.perf_counter()
            count = sum(b["label"].shape[0] for b in datasets.train_batches(epoch))
            seconds = time.perf_counter() - start
        results["pipeline_train_examples_per_s"] = count / seconds

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
