"""Default experiment: ResNet-18 from scratch on synthetic heart sounds, offline, on a laptop.

The synthetic set (normal / murmur / extrastole, PASCAL set_b's layout and naming) is written
once into the data directory and read with the same code as the real recordings; 4-second
log-mel windows become 128x128 single-channel images; Adam with a one-cycle schedule.

Launch:
    ./launch.sh                       # same as --config=experiments/heartbeat_synthetic.py
    ./launch.sh --config.num_epochs=3 --workdir=runs/quick

Result (2026-11-23, 2-core AMD EPYC CPU, Python 3.12.1, jax 0.12, the shipped XLA flags,
cold data and compile caches, environment already installed): 2 min 33 s wall for
`./launch.sh` (10 epochs, 130 steps of batch 16, every 4 s window of the 90 validation
recordings evaluated each epoch); validation accuracy 0.989 (89/90), balanced accuracy 0.982,
macro-F1 0.987. (Earlier the same day, before the XLA flags and the strided max-pool: 2 min
54 s, accuracy 1.000; 2026-11-22, centre window only: 95 s, accuracy 0.989.)
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.num_epochs = 10
    config.batch_size = 16
    config.eval_batch_size = 64
    # Batch sizes are global: split over every device of every process.
    config.parallel = "jit"  # 'jit' (sharded over a device mesh) | 'pmap' (replicated per device)
    config.dtype = "float32"  # | 'bfloat16': convolutions and matmuls; parameters stay float32
    config.grad_accum_steps = 1  # >1: the batch runs as this many micro-batches, one update
    config.log_every_steps = 10  # the host reads the loss (and checks it is finite) and logs
    #                              the step scalars to TensorBoard this often
    config.init_from = ""  # a workdir, checkpoint or converted weights file that starts a fresh run
    config.init = ml_collections.ConfigDict()
    config.init.pretrained = ""  # e.g. 'torchvision:resnet34' or a .pth/.safetensors path

    # Transfer learning: parameters frozen by name pattern ('stem', 'layer1'..'layer4', 'body',
    # 'head', or regexes over paths like 'layer2_0/conv1/kernel'), and fastai's fine_tune.
    config.freeze = ()
    config.freeze_norm = "train"  # BatchNorm in frozen parts: 'train' (fastai) | 'frozen'
    config.fine_tune = ml_collections.ConfigDict()
    config.fine_tune.unfreeze_after = 0  # epochs frozen before all unfreezes; 0 = never
    config.fine_tune.learning_rate = 5e-4  # the unfrozen phase's one-cycle peak (head group)
    config.fine_tune.lr_spread = 0.01  # earliest group's rate / head's (fastai's slice(lr/100, lr))
    config.fine_tune.warmup_fraction = 0.3
    config.fine_tune.div_factor = 5.0

    config.loss = ml_collections.ConfigDict()
    # Classification: 'softmax_cross_entropy' | 'binary_cross_entropy' (one sigmoid output, 2
    # classes) | 'hinge' (multi-class). Regression on the data's numeric target: 'mse' |
    # 'mae' | 'huber'; then report MAE/RMSE/R² and pick the best by e.g. 'val_mae', 'min'.
    config.loss.name = "softmax_cross_entropy"
    config.loss.label_smoothing = 0.0  # the cross-entropies
    config.loss.class_weights = "none"  # 'none' | 'balanced' | comma-separated, in class order
    config.loss.huber_delta = 1.0  # 'huber': quadratic within this distance, in target units

    config.lr_find = ml_collections.ConfigDict()  # --mode=lr_find
    config.lr_find.start = 1e-7
    config.lr_find.end = 10.0
    config.lr_find.num_steps = 100

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 0  # also save every N steps (0: at epoch ends only)
    config.checkpoint.max_to_keep = 2  # newest checkpoints kept, besides the best one
    config.checkpoint.best_metric = "val_accuracy"  # '' keeps no best checkpoint
    config.checkpoint.best_mode = "max"  # | 'min'
    config.checkpoint.asynchronous = True  # saves finish in the background

    config.data = ml_collections.ConfigDict()
    config.data.name = "synthetic_heartbeat"  # | 'synthetic_heart_rate' (BPM target) | 'pascal_heartbeat' | 'audio_folder'
    config.data.manual_dir = ""  # pascal_heartbeat: set_a/, set_b/ and their CSVs; audio_folder: your recordings
    config.data.subset = "set_b"  # pascal_heartbeat: 'set_a' | 'set_b'
    config.data.csv = ""  # audio_folder: a CSV (path,label[,group][,target]) inside manual_dir; '' = one sub-folder per class
    config.data.classes = ()  # audio_folder: fixed class list; () = every label found
    config.data.data_dir = ""  # builds, features, synthetic set; '' = $CNNJAX_DATA_DIR or ~/.cache/cnnjax/data
    config.data.max_seconds = 600.0  # longer recordings are cut (and counted) when building
    config.data.feature_cache = True
    config.data.workers = 0  # grain worker processes for the training pipeline
    config.data.feature_workers = 0  # threads computing uncached log-mels; 0 = one per core
    config.data.synthetic = ml_collections.ConfigDict()
    config.data.synthetic.num_per_class = (("normal", 160), ("murmur", 80), ("extrastole", 60))
    config.data.synthetic.sample_rate = 4000
    config.data.synthetic.seed = 0
    config.data.val_fraction = 0.3
    config.data.split_seed = 0
    config.data.grouped = False  # keep each group (patient) on one side of the split
    config.data.num_folds = 0  # >= 2: validate on fold `fold` of `num_folds` (stratified)
    config.data.fold = 0
    config.data.val_groups = ()  # groups that validate, all others train: e.g. ('a',), a
    #                              source database never seen in training (leave-one-group-out)
    config.data.crop_seconds = 4.0  # the window a model sees
    config.data.eval_windows = "all"  # evaluation, cv, predict: average over windows covering
    #                                   each recording ('all') or take its centre one ('centre')
    config.data.image_size = (128, 128)
    config.data.channels = 1
    config.data.normalization = "db"  # 'db' (~[-1, 1]) | 'imagenet' (mean/std, for pretrained)

    config.augment = ml_collections.ConfigDict()
    config.augment.random_crop = True  # random window per epoch (centre when False)
    config.augment.gain_db = 0.0
    config.augment.freq_masks = 0  # SpecAugment
    config.augment.freq_mask_width = 16
    config.augment.time_masks = 0
    config.augment.time_mask_width = 16
    config.augment.mixup_alpha = 0.0

    config.audio = ml_collections.ConfigDict()
    config.audio.sample_rate = 4000
    config.audio.n_fft = 1024
    config.audio.hop_length = 125
    config.audio.n_mels = 128
    config.audio.fmin = 20.0
    config.audio.fmax = 2000.0
    config.audio.top_db = 80.0
    config.audio.frontend = "librosa"  # | 'jax': the same log-mel computed on the device

    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet18"
    config.model.in_channels = 1
    config.model.head = "plain"  # 'plain' (avg pool + fc) | 'fastai' (concat pool, BN, dropout, 2 dense)
    config.model.head_dropout = (0.25, 0.5)  # fastai head
    config.model.head_hidden = 512  # fastai head

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"  # 'adam' | 'adamw'
    config.optimizer.learning_rate = 2e-3
    config.optimizer.weight_decay = 0.0
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.schedule = "one_cycle"  # 'constant' | 'cosine' | 'one_cycle'
    config.optimizer.warmup_fraction = 0.25  # one_cycle: pct_start; cosine: linear warmup
    config.optimizer.div_factor = 25.0  # one_cycle: initial lr = peak / div_factor
    config.optimizer.final_div_factor = 1e4  # one_cycle: final lr = initial / final_div_factor
    config.optimizer.moms = (0.95, 0.85, 0.95)  # one_cycle: beta1 at start, peak lr, end
    config.optimizer.cycle_momentum = True  # one_cycle: cycle beta1 by `moms` (else `b1`)
    config.optimizer.lr_spread = 1.0  # (stem+layer1-2, layer3-4, head) rates: lr*spread .. lr
    return config
