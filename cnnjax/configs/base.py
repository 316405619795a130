"""The base config: every field cnnjax reads, each documented once, valid values included.

Its values are the default experiment's (ResNet-18 from scratch on synthetic heart sounds,
offline on a laptop; `experiments/heartbeat_synthetic.py` is that experiment's launch file
and measured result), so `cnnjax` and `./launch.sh` with no `--config` run it, also after a
plain `pip install .`. Every experiment starts from `get_config()` and overrides what differs;
fields of another kind of data (audio fields in an image experiment, image fields in an
audio one) or of another model are present but unused. `cnnjax.config.validate_config`
checks a config before any data is read.

    from cnnjax.configs import base
    config = base.get_config()
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # parameter initialisation, shuffling, augmentation and dropout
    config.num_epochs = 10  # > 0
    config.batch_size = 16  # > 0; global: split over every device of every process
    config.eval_batch_size = 64  # > 0; global, as batch_size
    config.adapt_batch_norm = False  # evaluate with BatchNorm statistics re-estimated on the
    #                                  validation inputs, labels unused (AdaBN): a new domain
    config.parallel = "jit"  # 'jit' (sharded over a device mesh) | 'pmap' (replicated per device)
    config.dtype = "float32"  # | 'bfloat16': convolutions and matmuls; parameters stay float32
    config.grad_accum_steps = 1  # > 0; >1: the batch runs as this many micro-batches, one update
    config.log_every_steps = 10  # > 0; the host reads the loss (and checks it is finite) and
    #                              logs the step scalars to TensorBoard this often
    config.init_from = ""  # a workdir, checkpoint or converted weights file that starts a fresh run
    config.init = ml_collections.ConfigDict()
    config.init.pretrained = ""  # e.g. 'torchvision:resnet34' or a .pth/.safetensors path

    # Transfer learning: parameters frozen by name pattern ('stem', 'layer1'..'layer4', 'body',
    # 'head', or regexes over paths like 'layer2_0/conv1/kernel'), and fastai's fine_tune.
    config.freeze = ()  # a tuple of patterns; () freezes nothing
    config.freeze_norm = "train"  # BatchNorm in frozen parts: 'train' (fastai) | 'frozen'
    config.fine_tune = ml_collections.ConfigDict()
    config.fine_tune.unfreeze_after = 0  # >= 0; epochs frozen before all unfreezes; 0 = never
    config.fine_tune.learning_rate = 5e-4  # the unfrozen phase's one-cycle peak (head group)
    config.fine_tune.lr_spread = 0.01  # earliest group's rate / head's (fastai's slice(lr/100, lr))
    config.fine_tune.warmup_fraction = 0.3  # the unfrozen phase's one-cycle pct_start, in [0, 1)
    config.fine_tune.div_factor = 5.0  # the unfrozen phase's initial lr = peak / div_factor

    config.loss = ml_collections.ConfigDict()
    # Classification: 'softmax_cross_entropy' | 'binary_cross_entropy' (one sigmoid output, 2
    # classes) | 'hinge' (multi-class). Regression on the data's numeric target: 'mse' |
    # 'mae' | 'huber'; then report MAE/RMSE/R² and pick the best by e.g. 'val_mae', 'min'.
    config.loss.name = "softmax_cross_entropy"
    config.loss.label_smoothing = 0.0  # the cross-entropies only; in [0, 1]
    config.loss.class_weights = "none"  # classification: 'none' | 'balanced' | comma-separated
    #                                     positive numbers, one per class in class order
    config.loss.logit_adjustment = 0.0  # the cross-entropies: tau >= 0; train on logits +
    #                                     tau * log(training class frequencies), predict on the
    #                                     logits (Menon et al. 2021); 0 = off, 1 = the paper's
    config.loss.huber_delta = 1.0  # 'huber': quadratic within this distance, in target units; > 0

    config.lr_find = ml_collections.ConfigDict()  # --mode=lr_find
    config.lr_find.start = 1e-7  # the sweep's first learning rate
    config.lr_find.end = 10.0  # and its last
    config.lr_find.num_steps = 100  # steps between them, spaced geometrically

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 0  # also save every N steps (0: at epoch ends only)
    config.checkpoint.max_to_keep = 2  # newest checkpoints kept, besides the best one
    config.checkpoint.best_metric = "val_accuracy"  # a val_ metric of the task; '' keeps no best
    config.checkpoint.best_mode = "max"  # | 'min'
    config.checkpoint.asynchronous = True  # saves finish in the background

    _data(config)
    _augment(config)
    _audio(config)
    _model(config)
    _optimizer(config)
    return config


def _data(config: ml_collections.ConfigDict) -> None:
    config.data = ml_collections.ConfigDict()
    # Audio: 'synthetic_heartbeat' | 'synthetic_heart_rate' (BPM target) | 'pascal_heartbeat' |
    # 'audio_folder'. Images: 'synthetic_images' | 'image_folder' | 'tfds_cats_vs_dogs'.
    config.data.name = "synthetic_heartbeat"
    config.data.manual_dir = ""  # pascal_heartbeat: set_a/, set_b/ and their CSVs; audio_folder:
    #                              your recordings; image_folder: one sub-folder of images per class
    config.data.subset = "set_b"  # pascal_heartbeat: 'set_a' | 'set_b'
    config.data.csv = ""  # audio_folder: a CSV (path,label[,group][,target]) inside manual_dir;
    #                       '' = one sub-folder per class
    config.data.classes = ()  # audio_folder, image_folder: fixed class list; () = every label found
    config.data.data_dir = ""  # builds, features, synthetic sets; '' = $CNNJAX_DATA_DIR or
    #                            ~/.cache/cnnjax/data
    config.data.max_seconds = 600.0  # audio: longer recordings are cut (and counted) when building
    config.data.feature_cache = True  # audio: store each recording's log-mel once, on disk
    config.data.workers = 0  # grain worker processes for the training pipeline; 0 = in process
    config.data.sampling = "shuffle"  # each epoch every training example once, shuffled |
    #   'balanced': as many examples, every class equally often (rare ones repeat); instead of
    #   class weights or logit adjustment, not with them | 'by_group': every batch from one
    #   group (source database, device), so BatchNorm trains on one source's statistics at a
    #   time, as `adapt_batch_norm` evaluates on a new one
    config.data.feature_workers = 0  # audio: threads computing uncached log-mels; 0 = one per core
    config.data.synthetic = ml_collections.ConfigDict()  # the synthetic heart sounds
    # (class, how many recordings) pairs
    config.data.synthetic.num_per_class = (("normal", 160), ("murmur", 80), ("extrastole", 60))
    config.data.synthetic.sample_rate = 4000  # Hz, as PASCAL set_b
    config.data.synthetic.seed = 0  # the recordings' randomness
    config.data.synthetic_images = ml_collections.ConfigDict()  # the synthetic cats and dogs
    config.data.synthetic_images.num_per_class = (("cat", 300), ("dog", 300))  # (class, count)
    config.data.synthetic_images.min_side = 100  # each image's height and width, in pixels:
    config.data.synthetic_images.max_side = 220  # 0 < min_side <= max_side
    config.data.synthetic_images.seed = 0  # the images' randomness
    config.data.val_fraction = 0.3  # stratified hold-out, in [0, 1)
    config.data.split_seed = 0  # which recordings validate (hold-out and folds)
    config.data.grouped = False  # keep each group (patient) on one side of the split
    config.data.num_folds = 0  # >= 2: validate on fold `fold` of `num_folds` (stratified)
    config.data.fold = 0  # 0 <= fold < num_folds
    config.data.val_groups = ()  # groups that validate, all others train: e.g. ('a',), a
    #                              source database never seen in training (leave-one-group-out)
    config.data.crop_seconds = 4.0  # audio: the window a model sees; > 0
    config.data.eval_windows = "all"  # audio evaluation, cv, predict: average over windows
    #                                   covering each recording ('all') or its centre one ('centre')
    config.data.image_size = (128, 128)  # (height, width) the model sees: log-mel windows are
    #                                      resized to it; images once, when built
    config.data.channels = 1  # 1 | 3 (images are RGB: 3)
    # Spectrograms: 'db' (~[-1, 1]) | 'imagenet' (mean/std, for pretrained). Images:
    # 'rescale' (x / 255, Keras') | 'imagenet'.
    config.data.normalization = "db"


def _augment(config: ml_collections.ConfigDict) -> None:
    config.augment = ml_collections.ConfigDict()
    config.augment.random_crop = True  # audio: random window per epoch (centre when False)
    # audio: stationary noise added in power at a level drawn between -top_db and noise_db
    # dB of the recording's loudest bin, e.g. -30 (a noisier room or recording chain)
    config.augment.noise_db = 0.0  # 0 = off
    config.augment.gain_db = 0.0  # audio: random gain in [-gain_db, gain_db] dB
    # audio: a random equaliser (another recording chain), each band's gain in dB on straight
    # lines between filter_points gains drawn in [-filter_db, filter_db] at evenly spaced bands
    config.augment.filter_db = 0.0  # 0 = off
    config.augment.filter_points = 4  # 2: a tilt; more: bumps and dips
    config.augment.freq_masks = 0  # audio: SpecAugment's frequency masks per window
    config.augment.freq_mask_width = 16  # their widest, in mel bands
    config.augment.time_masks = 0  # audio: SpecAugment's time masks per window
    config.augment.time_mask_width = 16  # their widest, in frames
    config.augment.mixup_alpha = 0.0  # mixup's Beta(alpha, alpha); 0 = off
    # audio: the above on the devices, inside a compiled function, from spectrograms copied
    # there once (the host hands over record indices and seeds: for GPUs and TPUs, whose steps
    # outrun the host's numpy); False: in numpy on the host (grain, `data.workers`).
    config.augment.on_device = False
    # Images: Keras ImageDataGenerator's geometric augmentations; 0 / False = off.
    config.augment.width_shift_range = 0.0  # fraction of the width
    config.augment.height_shift_range = 0.0  # fraction of the height
    config.augment.shear_range = 0.0  # degrees, as in Keras 2 and later (Keras 1: radians)
    config.augment.zoom_range = 0.0  # zoom drawn from [1 - z, 1 + z] per axis
    config.augment.horizontal_flip = False  # mirror half the images


def _audio(config: ml_collections.ConfigDict) -> None:
    """The log-mel input of audio data (unused by images)."""
    config.audio = ml_collections.ConfigDict()
    config.audio.sample_rate = 4000  # Hz; recordings are resampled to it; > 0
    config.audio.n_fft = 1024  # FFT window, in samples
    config.audio.hop_length = 125  # samples between frames; > 0
    config.audio.n_mels = 128  # > 0
    config.audio.fmin = 20.0  # Hz
    config.audio.fmax = 2000.0  # Hz
    config.audio.top_db = 80.0  # the dynamic range kept below the loudest bin
    config.audio.frontend = "librosa"  # | 'jax': the same log-mel computed on the device
    # each mel band's mean over the recording removed (per-recording normalisation): the
    # input no longer depends on the recording chain's frequency response
    config.audio.remove_band_means = False


def _model(config: ml_collections.ConfigDict) -> None:
    """The model and its fields: a model gets the fields it takes (see
    cnnjax.models.registry); the others must keep these values."""
    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet18"  # | 'resnet34' | 'resnet50' | 'inception_v3' | 'simple_cnn'
    config.model.in_channels = 1  # = data.channels
    # resnet*, inception_v3:
    config.model.head = "plain"  # 'plain' (the network's own classifier) | 'fastai' (concat
    #                              pool, BN, dropout, 2 dense) | 'dense' (Keras') | 'none'
    config.model.head_dropout = (0.25, 0.5)  # fastai head: one rate per dropout; dense: one
    config.model.head_hidden = 512  # fastai and dense heads
    config.model.features_at = ""  # cut the body after this block (e.g. 'layer3', 'Mixed_6e')
    # inception_v3:
    config.model.aux_logits = False  # torchvision's AuxLogits on Mixed_6e, in training
    config.model.transform_input = True  # (x - 0.5) / 0.5 as torchvision's ImageNet weights need
    # simple_cnn (the Keras tutorial's network); dropout also inception_v3's before 'plain' fc:
    config.model.widths = (32, 64, 128)  # one 3x3 conv + ReLU + 2x2 pool per width
    config.model.pool = "max"  # 'max' | 'avg' | 'min'
    config.model.head_pool = "flatten"  # 'flatten' | 'gap' (global average)
    config.model.dense = (128, 512)  # hidden dense layers
    config.model.batch_norm = False  # BatchNorm after each conv
    config.model.dropout = 0.0  # after each hidden dense layer


def _optimizer(config: ml_collections.ConfigDict) -> None:
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"  # 'adam' | 'adamw' (decoupled weight decay, torch's AdamW)
    config.optimizer.learning_rate = 2e-3  # the peak; > 0
    config.optimizer.weight_decay = 0.0  # adamw: decoupled; adam: L2 added to the gradient
    config.optimizer.b1 = 0.9  # beta1 when not cycled (cycle_momentum)
    config.optimizer.b2 = 0.999  # beta2
    config.optimizer.schedule = "one_cycle"  # 'constant' | 'cosine' | 'one_cycle'
    config.optimizer.warmup_fraction = 0.25  # one_cycle: pct_start; cosine: linear warmup; [0, 1)
    config.optimizer.div_factor = 25.0  # one_cycle: initial lr = peak / div_factor
    config.optimizer.final_div_factor = 1e4  # one_cycle: final lr = initial / final_div_factor
    config.optimizer.moms = (0.95, 0.85, 0.95)  # one_cycle: beta1 at start, peak lr, end
    config.optimizer.cycle_momentum = True  # one_cycle: cycle beta1 by `moms` (else `b1`)
    config.optimizer.lr_spread = 1.0  # (stem+layer1-2, layer3-4, head) rates: lr*spread .. lr
