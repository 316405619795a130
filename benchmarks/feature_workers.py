"""First-run log-mel features of PhysioNet 2016, serial against parallel, in one process.

    python -m benchmarks.feature_workers --manual_dir ../shared/data/physionet2016 \\
        [--limit 200] [--workers 2]

Builds the recordings once into a temporary data directory (timed apart), then computes
every log-mel at `experiments/physionet_pretrain.py`'s input settings into a fresh
temporary feature cache per setting: serial, worker threads (`spectrograms(...,
workers=N)`, what a run does), and spawned worker processes over the same per-recording
function (the alternative: no GIL, but each process first imports cnnjax).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from cnnjax.audio.features import MelSettings
from cnnjax.data.datasets import (Recordings, _recording_log_mel, load_recordings,
                                  mel_settings, spectrograms)
from cnnjax.data.feature_cache import FeatureCache
from experiments import physionet_pretrain


def _processes(recordings: Recordings, mel: MelSettings, cache: FeatureCache, workers: int
               ) -> None:
    """The same per-recording function in spawned processes (a fork of a process running
    JAX can deadlock), each result stored as it comes."""
    records = recordings.records
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        computed = pool.map(_recording_log_mel, [r["audio"] for r in records],
                            [int(r["sample_rate"]) for r in records], [mel] * len(records),
                            chunksize=max(1, len(records) // (8 * workers)))
        for record, value in zip(records, computed):
            cache.store(record["audio"], int(record["sample_rate"]), value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manual_dir", required=True)
    parser.add_argument("--limit", type=int, default=0, help="first N recordings; 0 = all")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    config = physionet_pretrain.get_config()
    config.data.manual_dir = args.manual_dir
    with tempfile.TemporaryDirectory() as tmp:
        config.data.data_dir = tmp
        started = time.perf_counter()
        recordings = load_recordings(config.data, log=lambda _: None)
        print(f"build and read: {time.perf_counter() - started:.1f} s")
        if args.limit:
            recordings = Recordings(recordings.class_names, recordings.records[:args.limit], {})
        n = len(recordings.records)
        seconds = sum(len(r["audio"]) / int(r["sample_rate"]) for r in recordings.records)
        print(f"{n} recordings, {seconds / 60:.1f} min of audio; load average "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        mel = mel_settings(config)
        settings = dataclasses.asdict(mel)
        runs = {
            "serial": lambda cache: spectrograms(recordings, mel, cache, workers=1),
            f"{args.workers} threads": lambda cache: spectrograms(recordings, mel, cache,
                                                                  workers=args.workers),
            f"{args.workers} processes": lambda cache: _processes(recordings, mel, cache,
                                                                  args.workers)}
        times = {}
        for name, run in runs.items():
            cache = FeatureCache(Path(tmp) / "features" / name.replace(" ", "_"), settings)
            started = time.perf_counter()
            run(cache)
            times[name] = time.perf_counter() - started
            print(f"{name}: {times[name]:.1f} s, {n / times[name]:.1f} recordings/s, "
                  f"x{times['serial'] / times[name]:.2f}; load average "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
        cached = [spectrograms(recordings, mel, FeatureCache(
            Path(tmp) / "features" / name.replace(" ", "_"), settings)) for name in runs]
        same = all(np.array_equal(a, b) for other in cached[1:]
                   for a, b in zip(cached[0], other, strict=True))
        print(f"threads and processes bit-identical to serial: {same}")


if __name__ == "__main__":
    main()
