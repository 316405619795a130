"""cnnjax: convolutional networks on images and audio spectrograms in JAX/Flax.

The pieces a research script imports:
    cnnjax.models   ResNet (torchvision layout), SimpleCNN, get_model
    cnnjax.train    TrainState, create_train_state, train_step / eval_step (and jitted),
                    make_optimizer, make_schedule, train_and_evaluate
    cnnjax.data     get_datasets, the PASCAL heart-sound index reader, splits
    cnnjax.audio    load_audio, log_mel, crop_frames, to_image, synthetic heart sounds
    cnnjax.metrics  confusion_matrix, classification_report
    cnnjax.report   JSON/JSONL writers, confusion-matrix and learning-curve plots
    cnnjax.use_fast_xla_flags   the XLA flags runs ship with (call before computing)
"""

from cnnjax import audio, data, metrics, models, report, train
from cnnjax.audio import load_audio, log_mel, to_image
from cnnjax.data import get_datasets
from cnnjax.errors import CnnjaxError, ConfigError, DataError
from cnnjax.metrics import classification_report, confusion_matrix
from cnnjax.models import ResNet, SimpleCNN, get_model, resnet18, resnet34, resnet50
from cnnjax.runtime import use_fast_xla_flags
from cnnjax.train import (TrainState, create_train_state, eval_step, jit_eval_step,
                          jit_train_step, make_optimizer, train_and_evaluate, train_step)

__version__ = "0.1.0"

__all__ = [
    "CnnjaxError", "ConfigError", "DataError", "ResNet", "SimpleCNN", "TrainState", "audio",
    "classification_report", "confusion_matrix", "create_train_state", "data", "eval_step",
    "get_datasets", "get_model", "jit_eval_step", "jit_train_step", "load_audio", "log_mel",
    "make_optimizer", "metrics", "models", "report", "resnet18", "resnet34", "resnet50",
    "to_image", "train", "train_and_evaluate", "train_step", "use_fast_xla_flags",
]
