"""cnnjax's XLA flags: added without overriding the user's, accepted by the installed XLA, and
in effect when set before JAX starts (checked in fresh processes on the compiled program)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cnnjax.runtime import FAST_XLA_FLAGS, use_fast_xla_flags

YNN = "xla_cpu_experimental_ynn_fusion_type"


def test_flags_are_added_once_and_never_override_the_users():
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    first = use_fast_xla_flags(environ)
    assert first == f"--xla_force_host_platform_device_count=2 --{YNN}={FAST_XLA_FLAGS[YNN]}"
    assert use_fast_xla_flags(environ) == first == environ["XLA_FLAGS"]
    users = {"XLA_FLAGS": f"--{YNN}="}
    assert use_fast_xla_flags(users) == f"--{YNN}=" == users["XLA_FLAGS"]
    assert use_fast_xla_flags({}) == f"--{YNN}={FAST_XLA_FLAGS[YNN]}"


# A conv layer with train-mode BatchNorm statistics, differentiated: the program whose
# convolutions and reductions the flags route. Prints how many YNNPACK fusions XLA made.
PROGRAM = """
import sys
import cnnjax.runtime
if sys.argv[1] == "ship":
    cnnjax.runtime.use_fast_xla_flags()
import jax, jax.numpy as jnp

def loss(x, w):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    mean = jnp.mean(y, (0, 1, 2))
    var = jnp.mean(jnp.square(y - mean), (0, 1, 2))
    return jnp.sum(jax.nn.relu((y - mean) * jax.lax.rsqrt(var + 1e-5)))

x, w = jnp.ones((4, 16, 16, 64)), jnp.ones((3, 3, 64, 64))
text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile().as_text()
print(text.count('"kind":"__ynn_fusion"'))
"""


def ynn_fusions(mode: str, xla_flags: str) -> int:
    env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", PROGRAM, mode], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="XLA:CPU's YNNPACK fusions: x86/ARM Linux")
def test_shipped_flags_keep_ynnpack_for_reductions_only_and_the_users_setting_wins():
    xla_default = ynn_fusions("plain", "")
    shipped = ynn_fusions("ship", "")
    assert 0 < shipped < xla_default  # reductions kept; convolutions taken back by XLA
    assert ynn_fusions("ship", f"--{YNN}=") == 0  # the user's 'none' stays
