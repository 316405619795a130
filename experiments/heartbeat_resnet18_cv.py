"""Honest numbers on PASCAL set_b: patient-grouped 5-fold cross-validation of a ResNet-18
trained from scratch (no pretrained weights needed), with balanced class weights, label
smoothing and SpecAugment; every recording judged whole (softmax averaged over its 4 s
windows). Each fold reports its last epoch: no checkpoint is picked by its validation score.

Launch (the PASCAL download holds set_a/, set_b/, set_a.csv, set_b.csv):
    ./launch.sh --config=experiments/heartbeat_resnet18_cv.py --mode=cv \\
        --config.data.manual_dir=~/data/pascal-heartbeat --workdir=runs/heartbeat_cv

Result: RESULT_PENDING
"""

import ml_collections

from cnnjax.config import sibling_config


def get_config() -> ml_collections.ConfigDict:
    config = sibling_config(__file__, "heartbeat_synthetic")
    config.num_epochs = 10
    config.batch_size = 16

    config.data.name = "pascal_heartbeat"
    config.data.subset = "set_b"
    config.data.grouped = True  # no patient on both sides of a fold
    config.data.num_folds = 5
    config.data.eval_windows = "all"

    config.model.name = "resnet18"
    config.loss.class_weights = "balanced"
    config.loss.label_smoothing = 0.1
    config.augment.gain_db = 6.0
    config.augment.freq_masks = 2
    config.augment.freq_mask_width = 12
    config.augment.time_masks = 2
    config.augment.time_mask_width = 16
    config.checkpoint.best_metric = "val_balanced_accuracy"
    return config
