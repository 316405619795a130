"""Optimizers and learning-rate schedules from `config.optimizer`."""

from __future__ import annotations

from typing import Any, Callable

import optax

SCHEDULES = ("constant", "cosine", "one_cycle")
OPTIMIZERS = ("adam", "adamw")


def make_schedule(opt: Any, total_steps: int) -> optax.Schedule:
    """`constant`: `learning_rate` throughout. `cosine`: linear warmup from 0 over
    `warmup_fraction` of the steps, then cosine decay to 0. `one_cycle`: cosine ramp from
    `learning_rate / div_factor` to `learning_rate` over `warmup_fraction` of the steps, then
    cosine annealing to `learning_rate / (div_factor * final_div_factor)` (fastai/PyTorch)."""
    peak = float(opt.learning_rate)
    warmup_steps = int(round(opt.warmup_fraction * total_steps))
    if opt.schedule == "constant":
        return optax.constant_schedule(peak)
    if opt.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=peak, warmup_steps=warmup_steps,
            decay_steps=max(total_steps, warmup_steps + 1), end_value=0.0)
    if opt.schedule == "one_cycle":
        return optax.cosine_onecycle_schedule(
            transition_steps=max(total_steps, 1), peak_value=peak,
            pct_start=float(opt.warmup_fraction), div_factor=float(opt.div_factor),
            final_div_factor=float(opt.final_div_factor))
    raise ValueError(f"unknown schedule {opt.schedule!r}; choose one of {SCHEDULES}.")


def make_optimizer(opt: Any, total_steps: int
                   ) -> tuple[optax.GradientTransformation, Callable[[int], Any]]:
    """`(optimizer, schedule)`. `adam` with `weight_decay` adds it to the gradient (L2, as
    torch.optim.Adam does); `adamw` decouples it."""
    schedule = make_schedule(opt, total_steps)
    if opt.name == "adamw":
        return optax.adamw(schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay), schedule
    if opt.name == "adam":
        adam = optax.adam(schedule, b1=opt.b1, b2=opt.b2)
        if opt.weight_decay:
            adam = optax.chain(optax.add_decayed_weights(opt.weight_decay), adam)
        return adam, schedule
    raise ValueError(f"unknown optimizer {opt.name!r}; choose one of {OPTIMIZERS}.")
