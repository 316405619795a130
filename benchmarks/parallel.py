"""Train-step throughput by device count and parallel mode: ResNet-18 on one-channel
128x128 spectrogram images, global batch 32, Adam, through `cnnjax.parallel.DataParallel`.

    python -m benchmarks.parallel [--steps 10] [--repeats 2] [--out results.json]

Each variant runs in its own process (host devices are fixed at start-up with
`--xla_force_host_platform_device_count`), the variants interleaved `--repeats` times;
the table gives the median images/s over repeats of the median step time after two
warm-up steps, and the first step's time (compile included). On a CPU, 'devices' split the
same cores, so this measures the parallel machinery's overhead, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = [(1, "jit"), (2, "jit"), (2, "pmap")]
BATCH, IMAGE = 32, (128, 128, 1)


def measure(mode: str, steps: int) -> dict[str, float]:
    """Runs in the child process."""
    import jax
    import numpy as np
    import optax

    from cnnjax.models import resnet18
    from cnnjax.parallel import DataParallel
    from cnnjax.train import create_train_state

    parallel = DataParallel(mode)
    model = resnet18(num_classes=3, in_channels=1,
                     norm_axis_name=parallel.norm_axis_name)
    state = parallel.place(create_train_state(model, optax.adam(1e-3), IMAGE,
                                              jax.random.PRNGKey(0)))
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(BATCH, *IMAGE)).astype(np.float32),
             "label": rng.integers(0, 3, BATCH).astype(np.int32)}
    times = []
    for _ in range(steps + 2):
        started = time.perf_counter()
        state, metrics = parallel.train_step(state, parallel.put_batch(batch))
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - started)
    step = statistics.median(times[2:])
    return {"devices": jax.device_count(), "first_step_s": times[0], "step_s": step,
            "images_per_s": BATCH / step}


def run_variant(devices: int, mode: str, steps: int) -> dict[str, float]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=(
        f"{os.environ.get('XLA_FLAGS', '')} "
        f"--xla_force_host_platform_device_count={devices}").strip())
    out = subprocess.run([sys.executable, "-m", "benchmarks.parallel", "--child", mode,
                          "--steps", str(steps)], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.steps)))
        return
    runs: dict[str, list[dict[str, float]]] = {f"{d} x {m}": [] for d, m in VARIANTS}
    for _ in range(args.repeats):
        for devices, mode in VARIANTS:
            runs[f"{devices} x {mode}"].append(run_variant(devices, mode, args.steps))
    print(f"ResNet-18 train step, global batch {BATCH}, input {IMAGE}")
    print(f"{'devices x mode':16} {'images/s':>9} {'step s':>8} {'first step s':>13}")
    summary = {}
    for name, results in runs.items():
        summary[name] = {key: statistics.median(r[key] for r in results)
                         for key in ("images_per_s", "step_s", "first_step_s")}
        s = summary[name]
        print(f"{name:16} {s['images_per_s']:9.1f} {s['step_s']:8.3f} {s['first_step_s']:13.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
