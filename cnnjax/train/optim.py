"""Optimizers and learning-rate schedules from `config.optimizer`, with fastai's
transfer-learning recipe: frozen parameters, discriminative learning rates per layer group,
and the one-cycle policy with Adam's beta1 cycled against the learning rate.

The optimizer state has the same tree structure whatever is frozen, whichever optimizer or
schedule is chosen and wherever the schedule starts, so a run can switch from frozen to
unfrozen (a second phase with its own one-cycle) and keep its optimizer state.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cnnjax.train.param_groups import LR_GROUPS, frozen_mask, lr_group_labels

SCHEDULES = ("constant", "cosine", "one_cycle")
OPTIMIZERS = ("adam", "adamw")
EPS = 1e-8  # torch.optim.Adam's and optax's


def _cos_anneal(start: float, end: float, fraction: jax.Array) -> jax.Array:
    """fastai's SchedCos (and torch's OneCycleLR 'cos'): `start` at 0, `end` at 1. Written as
    a weighted mean, which has no float32 cancellation when `end` dwarfs `start`."""
    weight = (1 + jnp.cos(jnp.pi * fraction)) / 2
    return weight * start + (1 - weight) * end


def _two_phase(start: float, middle: float, end: float, turn: float,
               total: float) -> optax.Schedule:
    """Cosine from `start` to `middle` over steps [0, turn], then to `end` at `total`: fastai's
    one-cycle (`turn` = pct_start * total, not rounded, as fastai's schedule positions are
    fractions of the run). Hand-written rather than `optax.cosine_onecycle_schedule` for
    fastai's exact values: optax truncates the turn to a whole step and interpolates by
    multiplying scale factors."""
    def schedule(step: jax.Array) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        rise = jnp.clip(step / turn, 0, 1) if turn > 0 else 1.0
        fall = jnp.clip((step - turn) / (total - turn), 0, 1) if total > turn else 1.0
        return jnp.where(step < turn, _cos_anneal(start, middle, rise),
                         _cos_anneal(middle, end, fall))
    return schedule


def _shifted(schedule: optax.Schedule, start_step: int) -> optax.Schedule:
    return lambda step: schedule(step - start_step)


def make_schedule(opt: Any, total_steps: int, start_step: int = 0) -> optax.Schedule:
    """The head group's learning rate at a global step; the schedule runs over `total_steps`
    steps from `start_step`. `constant`: `learning_rate` throughout. `cosine`: linear warmup
    from 0 over `warmup_fraction` of the steps, then cosine decay to 0. `one_cycle`: cosine
    ramp from `learning_rate / div_factor` to `learning_rate` over `warmup_fraction` of the
    steps, then cosine annealing to `learning_rate / (div_factor * final_div_factor)`
    (fastai's fit_one_cycle)."""
    peak = float(opt.learning_rate)
    if opt.schedule == "constant":
        return optax.constant_schedule(peak)
    if opt.schedule == "cosine":
        warmup_steps = int(round(opt.warmup_fraction * total_steps))
        return _shifted(optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=peak, warmup_steps=warmup_steps,
            decay_steps=max(total_steps, warmup_steps + 1), end_value=0.0), start_step)
    if opt.schedule == "one_cycle":
        start = peak / float(opt.div_factor)
        return _shifted(_two_phase(start, peak, start / float(opt.final_div_factor),
                                   float(opt.warmup_fraction) * total_steps, total_steps),
                        start_step)
    raise ValueError(f"unknown schedule {opt.schedule!r}; choose one of {SCHEDULES}.")


def make_momentum_schedule(opt: Any, total_steps: int, start_step: int = 0) -> optax.Schedule:
    """Adam's beta1 at a global step: with `one_cycle` and `cycle_momentum`, cosine from
    `moms[0]` down to `moms[1]` while the learning rate rises, back up to `moms[2]` while it
    falls (fastai); otherwise `b1` throughout."""
    if opt.schedule != "one_cycle" or not opt.cycle_momentum:
        return optax.constant_schedule(float(opt.b1))
    high, low, end = (float(m) for m in opt.moms)
    return _shifted(_two_phase(high, low, end, float(opt.warmup_fraction) * total_steps,
                               total_steps), start_step)


def group_multipliers(lr_spread: float) -> dict[str, float]:
    """Learning-rate multipliers of the groups, geometrically spaced from `lr_spread` (early)
    to 1 (head): fastai's `even_mults`, what `slice(lr * lr_spread, lr)` gives."""
    if lr_spread <= 0:
        raise ValueError(f"lr_spread must be positive, got {lr_spread}.")
    last = len(LR_GROUPS) - 1
    return {group: lr_spread ** (1 - i / last) for i, group in enumerate(LR_GROUPS)}


class ScaleByAdamState(NamedTuple):
    """`count`: steps taken, for the momentum schedule. `leaf_count`: steps each leaf took
    unfrozen (torch's per-parameter `step`), for its bias correction, so that a leaf unfrozen
    mid-run starts Adam afresh rather than with near-zero, uncorrected moments."""
    count: jax.Array
    leaf_count: Any
    mu: Any
    nu: Any


def scale_by_adam(b1: optax.Schedule, b2: float, eps: float,
                  frozen: Any) -> optax.GradientTransformation:
    """Adam's direction (torch.optim.Adam's arithmetic), with beta1 following a schedule.
    Frozen leaves (Python bools, resolved when tracing) output zeros and keep their state, so
    their moments stay 0 and XLA drops their gradients.

    Hand-written rather than `optax.scale_by_adam` for torch's exact semantics: a step count
    per leaf (torch's per-parameter `step`) for the bias correction of leaves unfrozen
    mid-run, beta1 read from a schedule (fastai's cycled momentum), and the second moment's
    correction without rounding b2 to float32."""
    def init_fn(params: Any) -> ScaleByAdamState:
        return ScaleByAdamState(count=jnp.zeros([], jnp.int32),
                                leaf_count=jax.tree.map(lambda _: jnp.zeros([], jnp.int32), params),
                                mu=jax.tree.map(jnp.zeros_like, params),
                                nu=jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates: Any, state: ScaleByAdamState,
                  params: Any = None) -> tuple[Any, ScaleByAdamState]:
        del params
        beta1 = b1(state.count)

        def leaf(g, is_frozen, n, m, v):
            if is_frozen:
                return jnp.zeros_like(g), n, m, v
            n = optax.safe_increment(n)
            m = beta1 * m + (1 - beta1) * g
            v = b2 * v + (1 - b2) * jnp.square(g)
            # 1 - b2**n through expm1: b2 rounded to float32 would cost 1e-5 of the step.
            bias2 = -jnp.expm1(n * math.log(b2))
            return (m / (1 - beta1**n)) / (jnp.sqrt(v / bias2) + eps), n, m, v

        treedef = jax.tree.structure(updates)
        trees = (updates, frozen, state.leaf_count, state.mu, state.nu)
        results = [leaf(*args) for args in zip(*(treedef.flatten_up_to(t) for t in trees))]
        new_updates, leaf_count, mu, nu = (treedef.unflatten(col) for col in zip(*results))
        return new_updates, ScaleByAdamState(optax.safe_increment(state.count), leaf_count,
                                             mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def _add_decayed_weights(rate: float, decay: Any) -> optax.GradientTransformation:
    """Adds `rate * param` to the updates of the leaves marked True in `decay`.

    The arithmetic of `optax.add_decayed_weights(rate, mask=decay)`, bit for bit, but with
    the chain's state as it is: optax's mask wraps the state in a `MaskedState`, a tree
    orbax would refuse to restore the optimizer state of existing checkpoints into."""
    def add(update: jax.Array, param: jax.Array, decayed: bool) -> jax.Array:
        return update + rate * param if decayed and rate else update
    return optax.stateless(lambda updates, params: jax.tree.map(add, updates, params, decay))


def _map_static(fn: Callable[[jax.Array, Any], jax.Array],
                static: Any) -> optax.GradientTransformation:
    """Applies `fn(update, static_leaf)` per leaf; `static` holds Python values."""
    return optax.stateless(lambda updates, _: jax.tree.map(fn, updates, static))


def make_optimizer(opt: Any, total_steps: int, params: Any, *, freeze: tuple[str, ...] = (),
                   frozen: Any = None, start_step: int = 0
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`(optimizer, schedule)` for `params` (arrays or `jax.ShapeDtypeStruct`s: only names and
    ranks are read). `schedule(step)` is the head group's learning rate at a global step.

    Parameters matching `freeze` (see param_groups) never move: Adam skips them and their
    final updates are zeros, weight decay included; `frozen`, a tree of Python bools, replaces
    the patterns when given (e.g. to keep frozen parts' BatchNorm training). Groups early/late/head scale the rate by
    `group_multipliers(opt.lr_spread)`. Weight decay skips biases and BatchNorm parameters
    (rank <= 1): `adam` adds it to the gradient (L2, torch.optim.Adam), `adamw` decouples it
    (torch.optim.AdamW: `p -= group_lr * weight_decay * p`). Schedules count from
    `start_step`, the global step the optimizer state's counters will be at.
    """
    schedule = make_schedule(opt, total_steps, start_step)
    if frozen is None:
        frozen = frozen_mask(params, freeze)
    decay = jax.tree.map(lambda p: p.ndim > 1, params)
    multipliers = group_multipliers(float(opt.lr_spread))
    scales = jax.tree.map(multipliers.__getitem__, lr_group_labels(params))
    weight_decay = float(opt.weight_decay)
    tx = optax.chain(
        _add_decayed_weights(weight_decay if opt.name == "adam" else 0.0, decay),
        scale_by_adam(make_momentum_schedule(opt, total_steps, start_step), float(opt.b2), EPS,
                      frozen),
        _add_decayed_weights(weight_decay if opt.name == "adamw" else 0.0, decay),
        optax.scale_by_schedule(lambda count: -schedule(count)),
        _map_static(lambda u, scale: u if scale == 1 else u * scale, scales),
        _map_static(lambda u, is_frozen: jnp.zeros_like(u) if is_frozen else u, frozen))
    return tx, schedule
