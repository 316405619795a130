"""Training phases: what is frozen and how the learning rate runs, per range of epochs.

One phase by default (`config.freeze` applies throughout). With
`config.fine_tune.unfreeze_after = N` the run is fastai's `fine_tune`: N epochs with
`config.freeze` frozen and `config.optimizer`'s one-cycle, then everything unfrozen for the
remaining epochs, with its own one-cycle over them at `config.fine_tune`'s learning rate spread
over the layer groups. The optimizer state carries across (frozen parameters' moments stay 0
until they unfreeze), so a resumed run lands in its phase by epoch alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import ml_collections


FINE_TUNE_OVERRIDES = ("learning_rate", "lr_spread", "warmup_fraction", "div_factor")


@dataclass(frozen=True)
class Phase:
    name: str
    first_epoch: int  # 1-based, inclusive
    last_epoch: int
    freeze: tuple[str, ...]
    optimizer: Any  # a ConfigDict like config.optimizer

    @property
    def num_epochs(self) -> int:
        return self.last_epoch - self.first_epoch + 1


def training_phases(config: Any) -> tuple[Phase, ...]:
    """The run's phases from a config the gate (cnnjax.config.validate_config) passed."""
    unfreeze_after = int(config.fine_tune.unfreeze_after)
    freeze = tuple(config.freeze)
    if unfreeze_after <= 0:
        return (Phase("train", 1, config.num_epochs, freeze, config.optimizer),)
    unfrozen = ml_collections.ConfigDict(config.optimizer.to_dict())
    for field in FINE_TUNE_OVERRIDES:
        unfrozen[field] = config.fine_tune[field]
    return (Phase("frozen", 1, unfreeze_after, freeze, config.optimizer),
            Phase("unfrozen", unfreeze_after + 1, config.num_epochs, (), unfrozen))


def phase_of_epoch(phases: Sequence[Phase], epoch: int) -> Phase:
    return next(p for p in phases if p.first_epoch <= epoch <= p.last_epoch)
