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

Result (2026-11-23, 2-core AMD EPYC CPU, Python 3.12.1, jax 0.12; PASCAL set_b, 323 train /
138 validation recordings; random initialisation with `--config.init.pretrained=
--config.fine_tune.lr_spread=1`; 20 epochs, 27 min sharing the CPU with another job):
the best checkpoint (epoch 15, by balanced accuracy; `--mode=eval`) reaches balanced accuracy
0.570, macro-F1 0.446, accuracy 0.449, recall extrastole 10/14, murmur 18/28, normal 34/96;
the last epoch 0.505 / 0.364 / 0.355. Balanced class weights trade the majority class for
the rare ones: against the original recipe (balanced accuracy 0.358) it finds most
extrasystoles and murmurs, at the cost of many normal recordings. Epochs vary widely on this
validation split of 138; from random weights the recipe stays far from what ImageNet
weights are for.
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
