"""cnnjax: convolutional networks on images and audio spectrograms in JAX/Flax.

Layers, lowest first; none imports one above it (tests/test_layering.py):
    cnnjax.models      linen modules: ResNet (torchvision layout), InceptionV3, SimpleCNN,
                       get_model
    cnnjax.audio       load_audio, log_mel (librosa and JAX), crop_frames, to_image,
                       synthetic heart sounds
    cnnjax.pretrained  torchvision/timm weight files -> variables for cnnjax.models
    cnnjax.data        get_datasets and the `Datasets` it returns (cnnjax.data.contract)
    cnnjax.train       TrainState, create_train_state, train_step / eval_step (and jitted),
                       make_optimizer, the epoch loop (train_and_evaluate)
    the modes          cnnjax.evaluation, predict, cv, baseline, export; cnnjax.main, the
                       command line that runs them
Shared below them all: errors, imagenet, progress, runtime; metrics and report (JSON, plots)
serve training and the modes.

`import cnnjax` itself is light: the names below (`cnnjax.resnet18`, `cnnjax.jit_train_step`,
...) import their module on first use, so a script that needs only the models never loads
grain, TFDS or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

from cnnjax.errors import CnnjaxError, ConfigError, DataError

__version__ = "0.1.0"

# The names a research script reaches as `cnnjax.<name>`, by the module that defines them.
_LAZY_NAMES = {
    "audio": "cnnjax", "data": "cnnjax", "metrics": "cnnjax", "models": "cnnjax",
    "pretrained": "cnnjax", "report": "cnnjax", "train": "cnnjax",
    "load_audio": "cnnjax.audio", "log_mel": "cnnjax.audio", "to_image": "cnnjax.audio",
    "get_datasets": "cnnjax.data",
    "classification_report": "cnnjax.metrics", "confusion_matrix": "cnnjax.metrics",
    "ResNet": "cnnjax.models", "SimpleCNN": "cnnjax.models", "get_model": "cnnjax.models",
    "resnet18": "cnnjax.models", "resnet34": "cnnjax.models", "resnet50": "cnnjax.models",
    "use_fast_xla_flags": "cnnjax.runtime",
    "TrainState": "cnnjax.train", "create_train_state": "cnnjax.train",
    "eval_step": "cnnjax.train", "jit_eval_step": "cnnjax.train",
    "jit_train_step": "cnnjax.train", "make_optimizer": "cnnjax.train",
    "train_and_evaluate": "cnnjax.train", "train_step": "cnnjax.train",
}

__all__ = ["CnnjaxError", "ConfigError", "DataError", "__version__", *sorted(_LAZY_NAMES)]


def __getattr__(name: str) -> Any:
    """Imports the module behind `cnnjax.<name>` on first use (PEP 562)."""
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module 'cnnjax' has no attribute {name!r}")
    home = _LAZY_NAMES[name]
    value = importlib.import_module(f"cnnjax.{name}") if home == "cnnjax" \
        else getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_NAMES})
