"""A better recipe for PASCAL set_b than the original's: fastai's fine_tune (frozen body with
one-cycle, then everything unfrozen with learning rates spread over the layer groups),
balanced class weights with label smoothing for the imbalanced classes (320 normal, 95
murmur, 46 extrasystole), SpecAugment masks, gain jitter and mixup on random 4 s windows.

Launch (pretrained weights and the data as README says):
    ./launch.sh --config=experiments/heartbeat_resnet34_finetune.py \\
        --config.data.manual_dir=~/data/pascal-heartbeat --workdir=runs/heartbeat_finetune

Without the weights file, from a random initialisation (what the result below measures),
add `--config.init.pretrained=`; a random body also wants the same learning rate in every
group: `--config.fine_tune.lr_spread=1`.

Result: RESULT_PENDING
"""

import ml_collections

from cnnjax.config import sibling_config


def get_config() -> ml_collections.ConfigDict:
    config = sibling_config(__file__, "heartbeat_resnet34")
    config.num_epochs = 20
    config.fine_tune.unfreeze_after = 2
    config.fine_tune.learning_rate = 5e-4
    config.fine_tune.lr_spread = 0.01
    config.fine_tune.warmup_fraction = 0.3
    config.fine_tune.div_factor = 5.0

    config.loss.class_weights = "balanced"
    config.loss.label_smoothing = 0.1

    config.augment.random_crop = True
    config.augment.gain_db = 6.0
    config.augment.freq_masks = 2
    config.augment.freq_mask_width = 12
    config.augment.time_masks = 2
    config.augment.time_mask_width = 16
    config.augment.mixup_alpha = 0.4

    config.checkpoint.best_metric = "val_balanced_accuracy"
    return config
