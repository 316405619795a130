"""What a checkpoint costs the train loop: the time `save` blocks it, asynchronous vs
synchronous, for a ResNet-34 train state (params, BatchNorm statistics, Adam moments), and
the time a restore takes.

    python -m benchmarks.checkpoint [--repeats 5] [--out benchmarks/results/checkpoint.json]

Both modes are measured in one process, interleaved, on the same state, into a temporary
folder; medians over `--repeats` saves each.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import optax

from cnnjax.checkpoint import Checkpoints
from cnnjax.models import resnet34
from cnnjax.train import create_train_state


def state_megabytes(state) -> float:
    arrays = [state.params, state.batch_stats, state.opt_state]
    return sum(x.nbytes for x in jax.tree.leaves(arrays)) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    state = create_train_state(resnet34(num_classes=3, in_channels=1), optax.adam(1e-3),
                               (128, 128, 1), jax.random.PRNGKey(0))
    blocked = {"asynchronous": [], "synchronous": []}
    finished = {"asynchronous": [], "synchronous": []}
    restore_seconds = []
    with tempfile.TemporaryDirectory() as root:
        managers = {mode: Checkpoints(Path(root) / mode, max_to_keep=2,
                                      asynchronous=mode == "asynchronous")
                    for mode in blocked}
        for step in range(1, args.repeats + 2):
            state = state.replace(step=jax.numpy.asarray(step, jax.numpy.int32))
            for mode, checkpoints in managers.items():
                started = time.perf_counter()
                checkpoints.save(state, {"step": step})
                returned = time.perf_counter()
                checkpoints.wait()
                if step > 1:  # the first save of each manager includes one-off setup
                    blocked[mode].append(returned - started)
                    finished[mode].append(time.perf_counter() - started)
        checkpoints = managers["asynchronous"]
        for _ in range(args.repeats):
            started = time.perf_counter()
            restored, _, _ = checkpoints.restore_latest(state, warn=print)
            jax.block_until_ready(restored.params)
            restore_seconds.append(time.perf_counter() - started)
        for checkpoints in managers.values():
            checkpoints.close()

    result = {
        "state_megabytes": round(state_megabytes(state), 1),
        "device": str(jax.devices()[0]),
        "blocked_seconds": {m: round(float(np.median(v)), 4) for m, v in blocked.items()},
        "until_on_disk_seconds": {m: round(float(np.median(v)), 4) for m, v in finished.items()},
        "restore_seconds": round(float(np.median(restore_seconds)), 4),
    }
    ratio = result["blocked_seconds"]["synchronous"] / result["blocked_seconds"]["asynchronous"]
    result["train_loop_blocked_sync_over_async"] = round(ratio, 1)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
