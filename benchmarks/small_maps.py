"""Small inputs' cliff: convolutions on feature maps with fewer pixels than window taps, as
`lax.conv_general_dilated` (what cnnjax ran before) and as cnnjax's
`layers.conv_general_dilated` (two dots for those maps: the windows gathered by a 0/1
selection, then the kernel), side by side in one process.

    python -m benchmarks.small_maps [--sizes 32,48,64,80,96,128] [--layers-at 64,128]
                                    [--steps 4] [--repeats 2]

First each distinct convolution of ResNet-18 (batch 16, one-channel input of each side in
`--layers-at`) alone, forward / input gradient / weight gradient in ms; then whole ResNet-18
train and eval steps (batch 16, one channel, 3 classes) at each side of `--sizes`, both
variants taking turns within each repeat. Each variant's step is compiled ahead of time, so
neither can reuse the other's program; `swapped` counts the convolutions that XLA's compiled
program runs with swapped operands (a reversed window: `rhs_reversal`), the slow path.
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Callable
from unittest import mock

import jax
import jax.numpy as jnp
import optax
from jax import lax

from benchmarks.conv_breakdown import Conv
from benchmarks.run import Workload, _batch
from benchmarks.timing import step_times
from cnnjax.models import layers, resnet18
from cnnjax.runtime import use_fast_xla_flags
from cnnjax.train import create_train_state
from cnnjax.train.steps import eval_step, train_step

VARIANTS = {"lax": lax.conv_general_dilated, "cnnjax": layers.conv_general_dilated}


def resnet18_convs(size: int, channels: int = 1) -> list[Conv]:
    """ResNet-18's distinct convolutions for a size x size input (torch's ceil of odd sides
    after each stride 2), with how often each occurs."""
    convs = [Conv(7, 2, channels, 64, size, 1, first=True)]
    size = (size + 1) // 2
    size = (size + 1) // 2  # stem conv and max-pool
    cin = 64
    for stage in range(4):
        cout = 64 * 2**stage
        if stage:
            convs += [Conv(3, 2, cin, cout, size, 1), Conv(1, 2, cin, cout, size, 1)]
            size = (size + 1) // 2
            convs.append(Conv(3, 1, cout, cout, size, 3))
        else:
            convs.append(Conv(3, 1, cout, cout, size, 4))
        cin = cout
    return convs


def median_ms(fn: Callable[[], object], steps: int) -> float:
    return statistics.median(step_times(lambda: jax.block_until_ready(fn()), steps)) * 1e3


def conv_ms(c: Conv, conv_fn: Callable, batch: int, steps: int) -> tuple[float, float, float]:
    """forward, input-gradient and weight-gradient ms of one convolution through conv_fn."""
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, c.size, c.size, c.cin))
    w = jax.random.normal(jax.random.PRNGKey(1), (c.kernel, c.kernel, c.cin, c.cout)) * 0.05
    pad = c.kernel // 2

    def conv(x, w):
        return conv_fn(x, w, (c.stride, c.stride), [(pad, pad)] * 2,
                       dimension_numbers=("NHWC", "HWIO", "NHWC"))

    g = jnp.ones_like(conv(x, w))
    forward = jax.jit(conv)
    input_grad = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[0])
    weight_grad = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[1])
    return (median_ms(lambda: forward(x, w), steps),
            median_ms(lambda: input_grad(x, w, g), steps),
            median_ms(lambda: weight_grad(x, w, g), steps))


def compiled_step(w: Workload, variant: str) -> tuple[Callable[[], object], int]:
    """The train or eval step of `w` with every ResNet convolution through `variant`,
    compiled ahead of time, and how many of its convolutions XLA swapped."""
    model = resnet18(num_classes=w.num_classes, in_channels=w.channels)
    state = create_train_state(model, optax.adam(1e-4), (w.size, w.size, w.channels),
                               jax.random.PRNGKey(0))
    images, labels = _batch(w)
    batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
    step = ((lambda s, b: train_step(s, b)) if w.train  # a fresh function: its own trace
            else (lambda s, b: eval_step(s, b)))
    with mock.patch.object(layers, "conv_general_dilated", VARIANTS[variant]):
        compiled = jax.jit(step).lower(state, batch).compile()
    swapped = sum("convolution(" in line and "rhs_reversal" in line
                  for line in compiled.as_text().splitlines())
    return lambda: compiled(state, batch), swapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="32,48,64,80,96,128")
    parser.add_argument("--layers-at", default="64,128")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    use_fast_xla_flags()
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; batch {args.batch}, one channel")
    for side in (int(s) for s in args.layers_at.split(",") if s):
        print(f"\nResNet-18 convolutions at {side}x{side}, ms fwd / input grad / weight grad")
        print(f"{'conv (input map)':26} {'n':>2} {'lax':>22} {'cnnjax':>22}")
        for c in resnet18_convs(side):
            cells = [" / ".join(f"{t:.1f}" for t in conv_ms(c, VARIANTS[v], args.batch,
                                                            args.steps)) for v in VARIANTS]
            name = f"{c.kernel}x{c.kernel}/{c.stride} {c.cin}->{c.cout} @{c.size}"
            print(f"{name:26} {c.count:2d} {cells[0]:>22} {cells[1]:>22}", flush=True)

    workloads = [Workload(f"resnet18_{'train' if train else 'eval'}_{size}", "resnet18",
                          train, args.batch, size, channels=1, num_classes=3)
                 for train in (True, False) for size in map(int, args.sizes.split(","))]
    steps, swapped, times = {}, {}, {}
    for _ in range(args.repeats):
        for w in workloads:
            for variant in VARIANTS:
                if (w, variant) not in steps:
                    steps[w, variant], swapped[w, variant] = compiled_step(w, variant)
                times.setdefault((w, variant), []).append(
                    median_ms(steps[w, variant], args.steps))
    print(f"\nResNet-18 steps, ms (median of {args.steps} steps, median of {args.repeats} "
          "repeats; swapped: convolutions XLA runs with swapped operands)")
    print(f"{'step':22} {'lax ms':>8} {'swapped':>8} {'cnnjax ms':>10} {'swapped':>8} "
          f"{'speed-up':>9}")
    for w in workloads:
        before, after = (statistics.median(times[w, v]) for v in VARIANTS)
        print(f"{w.name:22} {before:8.0f} {swapped[w, 'lax']:8d} {after:10.0f} "
              f"{swapped[w, 'cnnjax']:8d} {before / after:9.2f}")


if __name__ == "__main__":
    main()
