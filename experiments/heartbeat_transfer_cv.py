"""Transfer that is measured: PASCAL set_b, patient-grouped 5-fold cross-validation of a
ResNet-18 that starts from the backbone pretrained on PhysioNet 2016
(`experiments/physionet_pretrain.py`, exported with `--mode=export`), fastai-style: two
epochs with the body frozen, then everything unfrozen with discriminative rates. The input
is the pretraining's (2 kHz, 64 log-mel bands to 800 Hz, 4 s windows at 96x96); every
recording is judged on all its windows; each fold reports its last epoch.

Launch (after the pretraining and its export, both with their default workdirs):
    ./launch.sh --config=experiments/heartbeat_transfer_cv.py --mode=cv \\
        --config.data.manual_dir=~/data/pascal-heartbeat --workdir=runs/transfer_cv
From scratch on the same folds, input and epochs (one phase, nothing frozen):
    ./launch.sh --config=experiments/heartbeat_transfer_cv.py --mode=cv \\
        --config.data.manual_dir=~/data/pascal-heartbeat --workdir=runs/scratch_cv \\
        --config.init.pretrained= --config.freeze="()" --config.fine_tune.unfreeze_after=0
"""

import ml_collections

from cnnjax.config import sibling_config


def get_config() -> ml_collections.ConfigDict:
    config = sibling_config(__file__, "physionet_pretrain")  # its input settings
    config.num_epochs = 20
    config.batch_size = 16

    config.data.name = "pascal_heartbeat"
    config.data.subset = "set_b"
    config.data.csv = ""
    config.data.classes = ()
    config.data.grouped = True  # no patient on both sides of a fold
    config.data.num_folds = 5

    config.init.pretrained = "runs/physionet_pretrain/weights.safetensors"
    config.freeze = ("body",)
    config.fine_tune.unfreeze_after = 2
    config.fine_tune.learning_rate = 1e-3
    config.fine_tune.lr_spread = 0.1  # in-domain weights: the stem learns at a tenth
    config.optimizer.learning_rate = 2e-3
    return config
