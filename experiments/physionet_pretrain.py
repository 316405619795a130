"""In-domain pretraining: a ResNet-18 learns normal / abnormal heart sounds from the 1,099
PhysioNet/CinC 2016 recordings, and its best weights are exported as a backbone that other
heart-sound experiments start from (`--config.init.pretrained=<file>`).

The input is what the set_b transfer experiments use (`heart_sound_features` below): audio at
2 kHz (PhysioNet's own rate; set_b's 4 kHz is resampled), 64 log-mel bands from 20 to 800 Hz
(where heart sounds live), 4 s windows scaled to 96x96. 96x96 rather than 128x128 was chosen
for compute alone (a ResNet-18 train step of 16 takes 240 ms against 395 ms on 2 cores;
64x64 falls off a cliff at 975 ms, see benchmarks/NOTES.md), not by any validation score.

Launch (`labels.csv` holds path,label,group; group = the source database):
    ./launch.sh --config=experiments/physionet_pretrain.py \\
        --config.data.manual_dir=~/data/physionet2016 --workdir=runs/physionet_pretrain
    ./launch.sh --workdir=runs/physionet_pretrain --mode=export
    # -> runs/physionet_pretrain/weights.safetensors, where heartbeat_transfer_cv looks

Result (2026-11-29, 2-core Intel Xeon CPU, Python 3.12.1, jax 0.12; 934 train / 165 validation
recordings, 29 steps of 32 an epoch): 60 epochs, 24 min 13 s wall: validation balanced
accuracy 0.801 at the last epoch (accuracy 0.806, recall abnormal 0.764, normal 0.839), 0.809
at the best epoch (55), which `--mode=export` wrote. 30 epochs (`--config.num_epochs=30`),
14 min 42 s while tests shared the CPU: 0.767 at the last epoch, 0.786 at the best (16);
training accuracy was still rising at either length (0.80, 0.84), so the network is
underfitted at this budget. The epoch count was chosen on this PhysioNet validation split,
never on set_b. With each recording's band means removed
(`--config.audio.remove_band_means=True`, a backbone for set_b runs with that setting;
2026-11-30, same machine, 46 min wall while other runs shared the CPU): 0.780 at the last
epoch, 0.805 at the best (44), which the export wrote. The log-mel-statistics baseline
reaches 0.733 ± 0.031 in stratified 5-fold CV on the same input
(`experiments/physionet_cv.py --mode=baseline`).
"""

import ml_collections

from cnnjax.configs import base


def heart_sound_features(config: ml_collections.ConfigDict) -> None:
    """The log-mel input shared by pretraining and every experiment that transfers from it."""
    config.audio.sample_rate = 2000
    config.audio.n_fft = 256
    config.audio.hop_length = 25
    config.audio.n_mels = 64
    config.audio.fmin = 20.0
    config.audio.fmax = 800.0
    config.data.crop_seconds = 4.0
    config.data.image_size = (96, 96)
    config.data.eval_windows = "all"


def get_config() -> ml_collections.ConfigDict:
    config = base.get_config()
    heart_sound_features(config)
    config.num_epochs = 60  # chosen over 30 by this run's own PhysioNet validation score
    config.batch_size = 32

    config.data.name = "audio_folder"
    config.data.csv = "labels.csv"
    config.data.classes = ("abnormal", "normal")
    config.data.val_fraction = 0.15  # stratified hold-out that picks the exported epoch

    config.model.name = "resnet18"
    config.optimizer.learning_rate = 2e-3
    config.loss.class_weights = "balanced"
    config.loss.label_smoothing = 0.1
    config.augment.gain_db = 6.0
    config.augment.freq_masks = 2
    config.augment.freq_mask_width = 8
    config.augment.time_masks = 2
    config.augment.time_mask_width = 12
    config.checkpoint.best_metric = "val_balanced_accuracy"
    return config
