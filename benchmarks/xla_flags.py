"""XLA flag settings measured side by side: each setting in its own process (XLA reads its
flags once per process), the settings taking turns for `--rounds` rounds.

    python -m benchmarks.xla_flags --only resnet34_train_128,simple_cnn_train_150 \\
        --setting 'ynn_off=--xla_cpu_experimental_ynn_fusion_type=' \\
        --setting 'ynn_off_avx512=--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_prefer_vector_width=512'

The first setting is the reference ('default', XLA's own defaults, unless given). A round runs
`python -m benchmarks.run` once per setting (one repeat of `--steps` steps each); the table
gives each setting's median images/s over rounds and its speed-up over the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def parse_setting(text: str) -> tuple[str, str]:
    name, _, flags = text.partition("=")
    if not name or not _:
        raise argparse.ArgumentTypeError(f"expected name=flags, got {text!r}")
    return name, flags


def run_once(flags: str, only: str, steps: int, out: Path) -> dict[str, float]:
    """images/s per workload of one `benchmarks.run` process under XLA_FLAGS=flags."""
    env = dict(os.environ, XLA_FLAGS=flags)
    subprocess.run([sys.executable, "-m", "benchmarks.run", "--only", only, "--steps",
                    str(steps), "--repeats", "1", "--out", str(out), "--xla-defaults"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    rows = json.loads(out.read_text())["rows"]
    return {row["name"]: row["cnnjax"]["images_per_s"] for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", required=True, help="comma-separated benchmarks.run workloads")
    parser.add_argument("--setting", type=parse_setting, action="append", default=[],
                        help="name=XLA flags (repeatable)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    settings = list(args.setting)
    if not settings or settings[0][1].strip():
        settings.insert(0, ("default", ""))
    images_per_s: dict[str, dict[str, list[float]]] = {name: {} for name, _ in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            for name, flags in settings:
                measured = run_once(flags, args.only, args.steps, Path(tmp) / "run.json")
                for workload, value in measured.items():
                    images_per_s[name].setdefault(workload, []).append(value)
                print(f"round {round_index + 1}/{args.rounds} {name}: "
                      + ", ".join(f"{w} {v:.1f}" for w, v in measured.items()), flush=True)
    reference = settings[0][0]
    print(f"\nimages/s, median over {args.rounds} rounds (speed-up over {reference!r})")
    for workload in images_per_s[reference]:
        base = statistics.median(images_per_s[reference][workload])
        cells = []
        for name, _ in settings:
            value = statistics.median(images_per_s[name][workload])
            cells.append(f"{name} {value:.1f} ({value / base:.2f}x)")
        print(f"{workload:28} " + "  ".join(cells))
    for name, flags in settings:
        print(f"  {name}: XLA_FLAGS={flags!r}")


if __name__ == "__main__":
    main()
