"""Process-wide XLA settings that cnnjax ships: the fastest measured on CPU.

XLA reads `XLA_FLAGS` once, when JAX starts its backend (the first computation), so
`use_fast_xla_flags()` must run before that: `python -m cnnjax.main`, the benchmarks and the
test suite call it first thing; a research script calls it right after its imports.
"""

from __future__ import annotations

import os
import warnings
from typing import MutableMapping

# XLA:CPU hands convolutions, dots and reductions to YNNPACK by default. Its convolution
# weight gradients are several times slower than XLA's own (Eigen) convolutions, while its
# reductions (BatchNorm statistics and their gradients) are several times faster than XLA's
# loop emitter: keep YNNPACK for reductions only. Measured side by side on a 2-core AMD EPYC,
# benchmarks/NOTES.md. Known to jaxlib 0.10.2 and later; GPUs and TPUs ignore it.
FAST_XLA_FLAGS: dict[str, str] = {
    "xla_cpu_experimental_ynn_fusion_type": "reduce",
}


def use_fast_xla_flags(environ: MutableMapping[str, str] = os.environ) -> str:
    """Adds `FAST_XLA_FLAGS` to `environ['XLA_FLAGS']`, leaving any flag the user set there
    alone, and returns the new value. Warns when JAX's backend has started already (the
    flags would then take effect only in child processes)."""
    flags = environ.get("XLA_FLAGS", "")
    added = [f"--{name}={value}" for name, value in FAST_XLA_FLAGS.items()
             if f"--{name}=" not in flags]
    if added:
        flags = " ".join([flags, *added]).strip()
        environ["XLA_FLAGS"] = flags
        if environ is os.environ and _backend_started():
            warnings.warn("use_fast_xla_flags() ran after JAX started its backend; call it "
                          "before the first computation for the flags to apply.", stacklevel=2)
    return flags


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:
        return False
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started and started())
