"""Heart rate from heart sounds: regress beats per minute from log-mel windows of the synthetic
heart sounds, whose generator knows each recording's rate (drawn uniformly from 55-100 BPM,
so always predicting the training mean is off by about 11 BPM on average).

The synthetic set of the default experiment is read as an audio folder whose CSV gives each
recording's heart rate as its `target`; a SimpleCNN (five conv-BN-ReLU-pool blocks, global
average pooling, dense 64) outputs one value per 4-second window, trained with the Huber
loss (delta 5 BPM), and a recording's prediction is the mean over its windows. The report
gives validation MAE, RMSE and R² in BPM beside those of always predicting the training mean.

Launch:
    ./launch.sh --config=experiments/heartbeat_rate_regression.py --workdir=runs/heart_rate

Result (2026-11-23, 2-core AMD EPYC CPU shared with two other jobs, Python 3.12.1, jax 0.12;
fresh data directory, so synthesis, build and features included): 179 s for the run (20
epochs, 260 steps of batch 16); on the 90 validation recordings after the last epoch, MAE
1.52 BPM, RMSE 2.06, R² 0.976, where always predicting the training mean (76.8 BPM) gives
MAE 12.04, RMSE 13.44, R² -0.003. The best epoch (18, kept as the best checkpoint for
--mode=eval and predict) had MAE 1.49. A 3-block SimpleCNN (receptive field ~22 px, under one
beat) reached only MAE 9.9 in 10 epochs; ResNet-18 MAE 2.1 in 10 epochs but 3.5 minutes.
"""

import ml_collections

from cnnjax.configs import base


def get_config() -> ml_collections.ConfigDict:
    config = base.get_config()
    config.num_epochs = 20
    config.batch_size = 16

    config.data.name = "synthetic_heart_rate"
    config.loss.name = "huber"
    config.loss.huber_delta = 5.0  # BPM: quadratic for small errors, linear beyond
    config.checkpoint.best_metric = "val_mae"
    config.checkpoint.best_mode = "min"

    config.model.name = "simple_cnn"
    # Five conv-pool blocks: a receptive field (~94 px, ~3 s) wide enough to see several beats.
    config.model.widths = (16, 32, 64, 64, 64)
    config.model.head_pool = "gap"
    config.model.dense = (64,)
    config.model.batch_norm = True
    return config
