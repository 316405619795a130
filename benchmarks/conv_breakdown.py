"""Where a ResNet-34 (or ResNet-50) train step's time goes: each distinct convolution of the network timed
alone (forward, input gradient, weight gradient) in XLA and in PyTorch channels_last,
multiplied by how often the network uses it, beside the whole train step.

    python -m benchmarks.conv_breakdown [--arch resnet34] [--batch 32] [--size 128] [--steps 10]

The convolutions' sum against the whole step tells how much of the gap to PyTorch is in the
convolutions (the libraries: XLA's Eigen/YNNPACK, PyTorch's oneDNN) and how much in the rest
(BatchNorm, ReLU, pooling, the optimizer). cnnjax runs under the XLA flags it ships.
"""

from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import dataclass
from typing import Callable

from benchmarks.run import Workload, jax_step, torch_step
from benchmarks.timing import step_times
from cnnjax.runtime import use_fast_xla_flags


@dataclass(frozen=True)
class Conv:
    kernel: int
    stride: int
    cin: int
    cout: int
    size: int  # input height = width
    count: int  # how many of these the network has
    first: bool = False  # the stem: a train step needs no gradient for its input


def resnet34_convs(size: int, channels: int = 3) -> list[Conv]:
    convs = [Conv(7, 2, channels, 64, size, 1, first=True)]
    size //= 4  # stem conv and max-pool
    cin = 64
    for stage, blocks in enumerate((3, 4, 6, 3)):
        cout = 64 * 2**stage
        if stage:
            convs += [Conv(3, 2, cin, cout, size, 1), Conv(1, 2, cin, cout, size, 1)]
            size //= 2
            convs.append(Conv(3, 1, cout, cout, size, 2 * blocks - 1))
        else:
            convs.append(Conv(3, 1, cout, cout, size, 2 * blocks))
        cin = cout
    return convs


def resnet50_convs(size: int, channels: int = 3) -> list[Conv]:
    """torchvision's ResNet-50 (v1.5: a stage's stride is in its first 3x3 convolution)."""
    convs = [Conv(7, 2, channels, 64, size, 1, first=True)]
    size //= 4
    cin = 64
    for stage, blocks in enumerate((3, 4, 6, 3)):
        width, stride = 64 * 2**stage, 2 if stage else 1
        convs += [Conv(1, 1, cin, width, size, 1), Conv(3, stride, width, width, size, 1),
                  Conv(1, stride, cin, 4 * width, size, 1)]
        size //= stride
        convs.append(Conv(1, 1, width, 4 * width, size, blocks))
        if blocks > 1:
            convs += [Conv(1, 1, 4 * width, width, size, blocks - 1),
                      Conv(3, 1, width, width, size, blocks - 1)]
        cin = 4 * width
    return convs


CONVS = {"resnet34": resnet34_convs, "resnet50": resnet50_convs}


def median_ms(fn: Callable[[], object], steps: int) -> float:
    return statistics.median(step_times(fn, steps)) * 1e3


def jax_conv_ms(c: Conv, batch: int, steps: int) -> tuple[float, float, float]:
    """forward, input-gradient and weight-gradient milliseconds of one conv in XLA."""
    import jax
    import jax.numpy as jnp

    x = jax.random.normal(jax.random.PRNGKey(0), (batch, c.size, c.size, c.cin))
    w = jax.random.normal(jax.random.PRNGKey(1), (c.kernel, c.kernel, c.cin, c.cout)) * 0.05
    pad = c.kernel // 2

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (c.stride, c.stride), [(pad, pad)] * 2,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    g = jnp.ones_like(conv(x, w))
    forward = jax.jit(conv)
    input_grad = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[0])
    weight_grad = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[1])
    return (median_ms(lambda: jax.block_until_ready(forward(x, w)), steps),
            median_ms(lambda: jax.block_until_ready(input_grad(x, w, g)), steps),
            median_ms(lambda: jax.block_until_ready(weight_grad(x, w, g)), steps))


def torch_conv_ms(c: Conv, batch: int, steps: int) -> tuple[float, float]:
    """forward and forward+gradients milliseconds of one conv in PyTorch channels_last."""
    import torch

    conv = torch.nn.Conv2d(c.cin, c.cout, c.kernel, c.stride, c.kernel // 2, bias=False)
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(batch, c.cin, c.size, c.size).contiguous(
        memory_format=torch.channels_last).requires_grad_(not c.first)
    g = torch.ones_like(conv(x))
    wrt = [conv.weight] if c.first else [x, conv.weight]

    def forward() -> None:
        with torch.no_grad():
            conv(x)

    def both() -> None:
        torch.autograd.grad(conv(x), wrt, g)

    return median_ms(forward, steps), median_ms(both, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(CONVS), default="resnet34")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    use_fast_xla_flags()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    print(f"{args.arch} convolutions, batch {args.batch}, {args.size}x{args.size}; ms per step "
          f"(x count); XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"{'conv':28} {'n':>3} {'xla fwd':>8} {'in grad':>8} {'w grad':>8} {'xla all':>8} "
          f"{'torch fwd':>9} {'torch all':>9}")
    totals = [0.0] * 4
    for c in CONVS[args.arch](args.size):
        fwd, input_grad, weight_grad = jax_conv_ms(c, args.batch, args.steps)
        torch_fwd, torch_all = torch_conv_ms(c, args.batch, args.steps)
        xla_all = fwd + (0.0 if c.first else input_grad) + weight_grad
        row = [fwd * c.count, xla_all * c.count, torch_fwd * c.count, torch_all * c.count]
        totals = [t + r for t, r in zip(totals, row)]
        name = f"{c.kernel}x{c.kernel}/{c.stride} {c.cin}->{c.cout} @{c.size}"
        print(f"{name:28} {c.count:3d} {fwd:8.1f} {input_grad:8.1f} {weight_grad:8.1f} "
              f"{xla_all:8.1f} {torch_fwd:9.1f} {torch_all:9.1f}")
    print(f"{'sum x count':28} {'':3} {totals[0]:8.0f} {'':8} {'':8} {totals[1]:8.0f} "
          f"{totals[2]:9.0f} {totals[3]:9.0f}")
    workload = Workload(f"{args.arch}_train", args.arch, True, args.batch, args.size)
    jax_ms = median_ms(jax_step(workload)[0], args.steps)
    torch_ms = median_ms(torch_step(workload, channels_last=True), args.steps)
    print(f"{'whole train step (Adam)':28} {'':3} {'':8} {'':8} {'':8} {jax_ms:8.0f} "
          f"{'':9} {torch_ms:9.0f}")
    print(f"{'rest (step - convolutions)':28} {'':3} {'':8} {'':8} {'':8} "
          f"{jax_ms - totals[1]:8.0f} {'':9} {torch_ms - totals[3]:9.0f}")


if __name__ == "__main__":
    main()
