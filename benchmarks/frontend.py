"""Log-mel throughput: librosa on the host (`log_mel`) vs jitted JAX (`log_mel_jax`).

    python -m benchmarks.frontend                     # 32 clips of 8 s at 4 kHz, 5 runs
    python -m benchmarks.frontend --batch 64 --repeats 10 --out /tmp/frontend.json

Both sides get the same batch of synthetic heart sounds. librosa computes one clip at a time
(as the data pipeline does); JAX computes the whole batch in one jitted call, timed until the
result is ready. Each side is warmed up once (compilation for JAX), then timed `--repeats`
times; the table shows the median examples/s and the JSON also holds every run. The largest
|dB difference| between the two on the batch is reported as a sanity check.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
from pathlib import Path

import jax
import librosa
import numpy as np

from benchmarks.timing import step_times
from cnnjax.audio.features import MelSettings, log_mel
from cnnjax.audio.frontend import MelFrontend
from cnnjax.audio.synth import CLASSES, synthesize

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "frontend.json"


def make_batch(batch: int, seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    clips = [synthesize(CLASSES[i % len(CLASSES)], rng, sample_rate=sample_rate,
                        duration=seconds) for i in range(batch)]
    return np.stack(clips).astype(np.float32)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="clips per batch")
    parser.add_argument("--seconds", type=float, default=8.0, help="clip length")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after warm-up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results path")
    args = parser.parse_args(argv)

    settings = MelSettings()
    waveforms = make_batch(args.batch, args.seconds, settings.sample_rate, args.seed)
    frontend = jax.jit(MelFrontend.create(settings))
    on_device = jax.device_put(waveforms)

    def run_librosa():
        return [log_mel(clip, settings) for clip in waveforms]

    def run_jax():
        return frontend(on_device).block_until_ready()

    max_diff = float(np.abs(np.stack(run_librosa()) - np.asarray(run_jax())).max())
    results = {"librosa log_mel (host, per clip)": step_times(run_librosa, args.repeats, warmup=1),
               "jitted log_mel_jax (batched)": step_times(run_jax, args.repeats, warmup=1)}

    rows = []
    for name, times in results.items():
        median = statistics.median(times)
        rows.append({"name": name, "median_s": median, "examples_per_s": args.batch / median,
                     "runs_s": times})
    speedup = rows[1]["examples_per_s"] / rows[0]["examples_per_s"]
    device = jax.devices()[0]
    report = {
        "benchmark": "log-mel frontend",
        "batch": args.batch, "seconds": args.seconds, "repeats": args.repeats,
        "settings": dataclasses.asdict(settings),
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "jax": jax.__version__, "librosa": librosa.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
        "max_abs_db_diff": max_diff, "speedup": speedup, "results": rows,
    }

    print(f"log-mel of {args.batch} clips x {args.seconds:g} s at {settings.sample_rate} Hz "
          f"on {report['device']} (median of {args.repeats})")
    print(f"{'':34s} {'median s':>10s} {'examples/s':>12s}")
    for row in rows:
        print(f"{row['name']:34s} {row['median_s']:10.4f} {row['examples_per_s']:12.1f}")
    print(f"speed-up {speedup:.1f}x; max |dB difference| {max_diff:.2e}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
