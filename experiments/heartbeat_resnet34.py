"""The original fastai heartbeat recipe: ImageNet-pretrained ResNet-34 with its body frozen,
trained for 5 epochs with one-cycle on mel-spectrogram images of PASCAL set_b, 70:30 split.

Log-mel windows of 4 s become 128x128 one-channel images (the RGB stem summed over its
input channels), normalised with torchvision's ImageNet statistics; fastai's head (concat
pooling, BN, dropout, 512 hidden units), AdamW with weight decay 0.01 and one-cycle at 1e-3 with
Adam's beta1 cycled; BatchNorm in the frozen body keeps training (fastai's default).

Launch (the PASCAL download holds set_a/, set_b/, set_a.csv, set_b.csv; pretrained weights
as README's "Pretrained weights" says):
    ./launch.sh --config=experiments/heartbeat_resnet34.py \\
        --config.data.manual_dir=~/data/pascal-heartbeat --workdir=runs/heartbeat_resnet34

Without the weights file, from a random initialisation (what the result below measures):
    ... --config.init.pretrained=

Result (2026-11-23, 2-core AMD EPYC CPU, Python 3.12.1, jax 0.12; PASCAL set_b, 323 train /
138 validation recordings; random initialisation, `--config.init.pretrained=`): validation
accuracy 0.616 (error_rate 0.384), balanced accuracy 0.358, macro-F1 0.360; recall
extrastole 1/14, murmur 5/28, normal 79/96. 226 s for the run (5 epochs, 50 steps of batch 32,
sharing the CPU with another job). With a random body frozen only BatchNorm and the head
learn, so this mostly predicts 'normal' (96/138 = 0.696 for always 'normal'); the recipe is
meant for ImageNet weights.
"""

import ml_collections

from cnnjax.configs import base


def get_config() -> ml_collections.ConfigDict:
    config = base.get_config()
    config.num_epochs = 5
    config.batch_size = 32
    config.init.pretrained = "torchvision:resnet34"
    config.freeze = ("body",)
    config.freeze_norm = "train"

    config.data.name = "pascal_heartbeat"
    config.data.subset = "set_b"
    config.data.val_fraction = 0.3
    config.data.normalization = "imagenet"
    config.data.workers = 1

    config.model.name = "resnet34"
    config.model.head = "fastai"

    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 0.01
    config.optimizer.schedule = "one_cycle"
    config.optimizer.warmup_fraction = 0.25
    config.optimizer.div_factor = 25.0
    config.optimizer.final_div_factor = 1e5
    return config
