"""Train-step and evaluation throughput of cnnjax's models, side by side with PyTorch.

    python -m benchmarks.run [--only resnet34_train_224,...] [--torch] [--steps 10]
                             [--repeats 2] [--dtype bfloat16] [--batch 256]
                             [--out benchmarks/results/cpu.json]

Everything runs in one process, interleaved: for each repeat, each workload runs in cnnjax,
then (with --torch) in PyTorch channels_last and NCHW, so a machine that slows down mid-run
slows every column alike. A measurement is the median step time of `--steps` steps after two
warm-up steps; the table gives the median over repeats. Train steps are the real ones
(`cnnjax.train.jit_train_step`: forward, backward, Adam, BatchNorm statistics; torch: the
same with `torch.optim.Adam`); evaluation is a forward pass in eval mode.

Beside images/s the table gives the first step's time (tracing and XLA compilation; the
persistent cache is off unless JAX_COMPILATION_CACHE_DIR is set) and the achieved GFLOP/s
(XLA's own count of the compiled step's floating-point operations over the step time) next
to the machine's ceiling: a 4096x4096 float32 matmul measured in the same run, and how many
cores each implementation kept busy. torch uses as many threads as there are cores, as XLA
does. cnnjax runs under the XLA flags it ships (`cnnjax.runtime`); `--xla-defaults` leaves
XLA_FLAGS as it finds them.

`--dtype bfloat16` compares mixed precision on both sides: cnnjax's `config.dtype='bfloat16'`
(bf16 convolutions and matmuls, float32 parameters, statistics and optimizer) against
PyTorch's automatic mixed precision (`torch.autocast` to bfloat16 around forward and loss).
`--batch` replaces every workload's batch size (the largest batch that fits a GPU).

`--sweep` measures instead ResNet-18 and ResNet-34, train and eval steps, batch 16, on
one-channel inputs of every side from 32 to 224 (`--sizes 64,80,...` for other sides), and
checks that step time grows with the input's area: a side whose step costs more than a larger
side's (by over `--cliff-tolerance`) is reported as a cliff, and the run exits with status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.timing import step_times
from cnnjax.models import SimpleCNN, resnet18, resnet34, resnet50
from cnnjax.runtime import use_fast_xla_flags
from cnnjax.train import create_train_state
from cnnjax.train.steps import jit_eval_step, jit_train_step

Step = Callable[[], None]


@dataclass(frozen=True)
class Workload:
    name: str
    arch: str  # 'simple_cnn' | 'resnet18' | 'resnet34' | 'resnet50'
    train: bool
    batch: int
    size: int
    channels: int = 3
    num_classes: int = 1000
    dtype: str = "float32"  # compute dtype: 'float32' | 'bfloat16' (parameters stay float32)


WORKLOADS = (
    Workload("resnet34_train_224", "resnet34", True, 16, 224),
    Workload("resnet34_train_128", "resnet34", True, 32, 128),
    Workload("resnet34_eval_224", "resnet34", False, 32, 224),
    Workload("simple_cnn_train_150", "simple_cnn", True, 32, 150, num_classes=2),
    Workload("resnet34_spectrogram_train", "resnet34", True, 32, 128, channels=1,
             num_classes=3),  # the flagship's 4 s log-mel windows
    Workload("resnet18_train_224", "resnet18", True, 16, 224),
    Workload("resnet50_train_224", "resnet50", True, 16, 224),
)
JAX_MODELS = {"simple_cnn": SimpleCNN, "resnet18": resnet18, "resnet34": resnet34,
              "resnet50": resnet50}


def _batch(w: Workload) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(w.batch, w.size, w.size, w.channels)).astype(np.float32)
    return images, rng.integers(0, w.num_classes, w.batch).astype(np.int32)


def jax_step(w: Workload) -> tuple[Step, float, float]:
    """cnnjax's step for `w`, the first call's seconds (compile included) and XLA's flop
    count of one step."""
    model = JAX_MODELS[w.arch](num_classes=w.num_classes, in_channels=w.channels,
                               dtype=jnp.dtype(w.dtype))
    state = create_train_state(model, optax.adam(1e-4), (w.size, w.size, w.channels),
                               jax.random.PRNGKey(0))
    images, labels = _batch(w)
    batch = {"image": jax.device_put(images), "label": jax.device_put(labels)}
    jitted = jit_train_step if w.train else jit_eval_step
    cost = jitted.lower(state, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    holder = {"state": state}

    def step() -> None:
        if w.train:
            holder["state"], metrics = jit_train_step(holder["state"], batch)
            jax.block_until_ready(metrics["loss"])
        else:
            jax.block_until_ready(jit_eval_step(holder["state"], batch)["logits"])

    jax.clear_caches()  # the first timed call compiles, as a fresh launch does
    started = time.perf_counter()
    step()
    return step, time.perf_counter() - started, float(cost.get("flops", 0.0))


def torch_step(w: Workload, channels_last: bool) -> Step:
    import torch
    import torchvision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if w.arch == "simple_cnn":
        model = _torch_keras_cnn(w)
    else:
        model = getattr(torchvision.models, w.arch)(num_classes=w.num_classes)
        if w.channels != 3:
            model.conv1 = torch.nn.Conv2d(w.channels, 64, 7, 2, 3, bias=False)
    images, labels = _batch(w)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(device)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train(w.train)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def autocast():
        return torch.autocast(device, torch.bfloat16, enabled=w.dtype == "bfloat16")

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        loss.item()
        sync()

    def evaluate() -> None:
        with torch.inference_mode(), autocast():
            model(x)
        sync()

    return train if w.train else evaluate


def _torch_keras_cnn(w: Workload):
    import torch
    from torch import nn

    layers: list[nn.Module] = []
    channels, size = w.channels, w.size
    for width in (32, 64, 128):
        layers += [nn.Conv2d(channels, width, 3), nn.ReLU(), nn.MaxPool2d(2)]
        channels, size = width, (size - 2) // 2
    layers += [nn.Flatten(), nn.Linear(channels * size * size, 128), nn.ReLU(),
               nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, w.num_classes)]
    return torch.nn.Sequential(*layers)


def seconds_per_step(step: Step, steps: int) -> tuple[float, float]:
    """Median seconds per step, and the cores kept busy meanwhile (the process's CPU time,
    all threads, over wall time: 2.0 is both cores of a 2-core machine)."""
    cpu, wall = time.process_time(), time.perf_counter()
    median = statistics.median(step_times(step, steps))
    return median, (time.process_time() - cpu) / (time.perf_counter() - wall)


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
    """The machine's float32 ceiling as XLA reaches it: an n x n matmul."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    times = step_times(lambda: jax.block_until_ready(matmul(a)), repeats, warmup=1)
    return 2 * n ** 3 / statistics.median(times) / 1e9


SWEEP_SIZES = (32, 48, 64, 80, 96, 112, 128, 160, 192, 224)
SWEEP_ARCHS = ("resnet18", "resnet34")


def size_sweep(sizes: Sequence[int], archs: Sequence[str] = SWEEP_ARCHS) -> list[Workload]:
    """Train and eval steps of each architecture, batch 16, on one-channel inputs of each
    side (spectrograms): step time should grow with the input's area, and a side that costs
    more than a larger one is a cliff (`cliffs`)."""
    return [Workload(f"{arch}_{'train' if train else 'eval'}_{size}x{size}x1", arch, train,
                     16, size, channels=1, num_classes=3)
            for arch in archs for train in (True, False) for size in sizes]


def cliffs(rows: list[dict], tolerance: float = 0.25) -> list[str]:
    """The sweep's cliffs: each row whose step takes more than (1 + tolerance) times the step
    of a row of the same architecture and mode with a larger input, as one line each."""
    found = []
    for row in rows:
        for larger in rows:
            same_series = (larger["arch"], larger["train"]) == (row["arch"], row["train"])
            if same_series and larger["size"] > row["size"] \
                    and row["step_ms"] > (1 + tolerance) * larger["step_ms"]:
                found.append(f"{row['arch']} {'train' if row['train'] else 'eval'} "
                             f"{row['size']}x{row['size']}: {row['step_ms']:.0f} ms per step, "
                             f"more than {larger['step_ms']:.0f} ms at "
                             f"{larger['size']}x{larger['size']}")
                break
    return found


def print_sweep(rows: list[dict], tolerance: float) -> list[str]:
    """Milliseconds per step, one line per architecture and mode, one column per side; then
    the cliffs, which it returns."""
    sizes = sorted({row["size"] for row in rows})
    print(f"\nms per step of {rows[0]['batch']} by input side (one channel):")
    print(f"{'series':16}" + "".join(f"{size:>8}" for size in sizes))
    for series in dict.fromkeys((row["arch"], row["train"]) for row in rows):
        by_size = {row["size"]: row["step_ms"] for row in rows
                   if (row["arch"], row["train"]) == series}
        name = f"{series[0]} {'train' if series[1] else 'eval'}"
        print(f"{name:16}" + "".join(f"{by_size[size]:8.0f}" if size in by_size
                                     else f"{'-':>8}" for size in sizes))
    found = cliffs(rows, tolerance)
    print("\n".join(["cliffs (a step slower than a larger input's):", *found]) if found
          else f"no cliff: no step costs more than {1 + tolerance:.2f}x a larger input's")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="",
                        help="comma-separated workload names (with --sweep: or architectures)")
    parser.add_argument("--torch", action="store_true", help="measure PyTorch as well")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="compute dtype (bfloat16: cnnjax bf16 compute vs torch autocast)")
    parser.add_argument("--batch", type=int, default=None,
                        help="batch size for every workload instead of its own")
    parser.add_argument("--sweep", action="store_true",
                        help="instead of the suite, ResNet-18/34 train and eval steps on "
                             "one-channel inputs of each side in --sizes, with a cliff check")
    parser.add_argument("--sizes", default=",".join(map(str, SWEEP_SIZES)),
                        help="comma-separated input sides for --sweep (implies it when given)")
    parser.add_argument("--cliff-tolerance", type=float, default=0.25,
                        help="--sweep: a step more than 1 + this times a larger input's step "
                             "is a cliff")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--xla-defaults", action="store_true",
                        help="do not add cnnjax's XLA flags (measure XLA_FLAGS as set)")
    args = parser.parse_args()
    if not args.xla_defaults:
        use_fast_xla_flags()
    chosen = [w for w in WORKLOADS if not args.only or w.name in args.only.split(",")]
    sweep = args.sweep or args.sizes != parser.get_default("sizes")
    if sweep:
        chosen = [w for w in size_sweep([int(size) for size in args.sizes.split(",")])
                  if not args.only or {w.name, w.arch} & set(args.only.split(","))]
    if not chosen:
        parser.error(f"--only matches no workload; choose from {[w.name for w in WORKLOADS]}")
    chosen = [dataclasses.replace(w, dtype=args.dtype, batch=args.batch or w.batch)
              for w in chosen]
    impls = ["cnnjax"]
    if args.torch:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        impls += ["torch_channels_last", "torch_nchw"]

    ceiling = matmul_gflops()
    steps: dict[tuple[str, str], Step] = {}
    compile_s: dict[str, float] = {}
    flops: dict[str, float] = {}
    times: dict[tuple[str, str], list[float]] = {}
    cores: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeats):
        for w in chosen:
            for impl in impls:
                key = (w.name, impl)
                if key not in steps:
                    if impl == "cnnjax":
                        steps[key], compile_s[w.name], flops[w.name] = jax_step(w)
                    else:
                        steps[key] = torch_step(w, channels_last=impl == "torch_channels_last")
                step_s, busy = seconds_per_step(steps[key], args.steps)
                times.setdefault(key, []).append(step_s)
                cores.setdefault(key, []).append(busy)
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)

    rows = []
    for w in chosen:
        row = {**dataclasses.asdict(w), "first_step_s": compile_s[w.name],
               "gflop_per_step": flops[w.name] / 1e9,
               "step_ms": statistics.median(times[w.name, "cnnjax"]) * 1e3}
        for impl in impls:
            step_s = statistics.median(times[w.name, impl])
            row[impl] = {"step_s": step_s, "images_per_s": w.batch / step_s,
                         "gflops": flops[w.name] / step_s / 1e9,
                         "step_s_per_repeat": times[w.name, impl],
                         "cores_busy": statistics.median(cores[w.name, impl])}
        if args.torch:
            row["ratio_vs_channels_last"] = (row["cnnjax"]["images_per_s"]
                                             / row["torch_channels_last"]["images_per_s"])
        rows.append(row)
    print_table(rows, impls, ceiling)
    found = print_sweep(rows, args.cliff_tolerance) if sweep else []
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine(), "matmul_gflops": ceiling,
                                        "steps": args.steps, "repeats": args.repeats,
                                        "rows": rows, "cliffs": found}, indent=2))
    if found:
        raise SystemExit(1)


def print_table(rows: list[dict], impls: list[str], ceiling: float) -> None:
    print(f"\n{machine()['summary']}; compute dtype {rows[0]['dtype']}; float32 matmul ceiling "
          f"{ceiling:.0f} GFLOP/s; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    header = f"{'workload':28} {'batch':>5} " + " ".join(f"{i + ' img/s':>24}" for i in impls)
    header += f" {'ratio':>6} {'GFLOP/s':>8} {'first step s':>12} {'cores busy':>12}"
    print(header)
    for row in rows:
        line = f"{row['name']:28} {row['batch']:5d} "
        line += " ".join(f"{row[i]['images_per_s']:24.1f}" for i in impls)
        ratio = row.get("ratio_vs_channels_last")
        line += f" {ratio:6.2f}" if ratio else f" {'-':>6}"
        line += f" {row['cnnjax']['gflops']:8.0f} {row['first_step_s']:12.1f} "
        line += "/".join(f"{row[i]['cores_busy']:.1f}" for i in impls).rjust(12)
        print(line)
    if "torch_channels_last" in impls:
        print("ratio: cnnjax images/s over PyTorch channels_last images/s")
    print("cores busy: CPU time over wall time while stepping, " + " / ".join(impls))


def machine() -> dict[str, str]:
    versions = {"python": platform.python_version(), "jax": jax.__version__,
                "device": jax.devices()[0].device_kind, "cores": str(os.cpu_count())}
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:
        pass
    versions["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    versions["summary"] = (f"{versions['device']}, {versions['cores']} cores, Python "
                           f"{versions['python']}, jax {versions['jax']}"
                           + (f", torch {versions['torch']}" if "torch" in versions else ""))
    return versions


if __name__ == "__main__":
    main()
