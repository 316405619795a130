"""`get_datasets(config)`: the one entry point the trainer uses for batches and class names
(a `Datasets`, `cnnjax.data.contract`).

Recordings go through a TFDS builder once (array_record files in the data directory), are
read back with `tfds.data_source`, turned into log-mel spectrograms (cached on disk by
recording and settings), split by `config.data` and served by the grain pipeline.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import numpy as np

from cnnjax.audio.features import MelSettings, log_mel, remove_band_means, resample
from cnnjax.audio.frontend import log_mel_many
from cnnjax.audio.synth import HEART_RATE_CSV, SynthSettings, default_data_root, write_dataset
from cnnjax.data.builders import AudioFolder, PascalHeartbeat, build
from cnnjax.data.contract import Datasets, EvalBatch, TrainBatches
from cnnjax.data.device_windows import DeviceWindows, IndexBatches, resident_spectrograms
from cnnjax.data.feature_cache import FeatureCache
from cnnjax.data.image_datasets import IMAGE_SOURCES, get_image_datasets
from cnnjax.data.index import Index, audio_folder_index, pascal_index
from cnnjax.data.pipeline import (AugmentSettings, EpochBatches, ImageSettings, SpectrogramSource,
                                  eval_batches, train_loader)
from cnnjax.data.splits import split_indices
from cnnjax.errors import ConfigError, DataError
from cnnjax.logs import logger
from cnnjax.progress import progress_bar


def _synthetic_folder(data: Any) -> Path:
    """The synthetic set of `config.data.synthetic`, written once into the data directory."""
    settings = SynthSettings(
        num_per_class=tuple((label, int(n)) for label, n in data.synthetic.num_per_class),
        sample_rate=int(data.synthetic.sample_rate), seed=int(data.synthetic.seed))
    return write_dataset(settings, data_root(data))


def _synthetic(data: Any) -> tuple[type, Index, str]:
    """The synthetic set is written in PASCAL set_b's layout and read by the real builder."""
    return PascalHeartbeat, pascal_index(_synthetic_folder(data), "set_b"), "set_b"


def _synthetic_heart_rate(data: Any) -> tuple[type, Index, None]:
    """The same recordings read as an audio folder whose CSV gives each one's heart rate
    (beats per minute) as its regression target."""
    return AudioFolder, audio_folder_index(_synthetic_folder(data), HEART_RATE_CSV), None


def _manual_dir(data: Any) -> Path:
    if not data.manual_dir:
        raise DataError(f"config.data.manual_dir is empty: set it to the folder holding the "
                        f"recordings for config.data.name={data.name!r}.")
    return Path(data.manual_dir).expanduser()


def _pascal(data: Any) -> tuple[type, Index, str]:
    return PascalHeartbeat, pascal_index(_manual_dir(data), data.subset), data.subset


def _audio_folder(data: Any) -> tuple[type, Index, None]:
    return AudioFolder, audio_folder_index(_manual_dir(data), data.csv, tuple(data.classes)), None


SOURCES: dict[str, Callable[[Any], tuple[type, Index, str | None]]] = {
    "synthetic_heartbeat": _synthetic,
    "synthetic_heart_rate": _synthetic_heart_rate,
    "pascal_heartbeat": _pascal,
    "audio_folder": _audio_folder,
}


def data_root(data: Any) -> Path:
    """`config.data.data_dir`, else `$CNNJAX_DATA_DIR`, else `~/.cache/cnnjax/data`."""
    return Path(data.data_dir).expanduser() if data.data_dir else default_data_root()


@dataclass
class Recordings:
    """The labelled recordings of a built dataset, sorted by file name."""
    class_names: tuple[str, ...]
    records: list[dict[str, Any]]
    summary: dict[str, Any]

    @property
    def labels(self) -> np.ndarray:
        return np.array([r["label"] for r in self.records], np.int32)

    @property
    def groups(self) -> list[str]:
        return [r["group"] for r in self.records]

    @property
    def file_names(self) -> list[str]:
        return [r["file_name"] for r in self.records]

    @property
    def targets(self) -> np.ndarray | None:
        """Each recording's numeric target (float32), or None when the source has none (an
        audio_folder CSV without a target column, the PASCAL sets)."""
        targets = np.array([r.get("target", np.nan) for r in self.records], np.float32)
        return None if np.isnan(targets).any() else targets


def load_recordings(data: Any, log: Callable[[str], None] = logger.info) -> Recordings:
    """Builds `data.name` once into the data directory (a changed source builds anew) and
    reads its labelled recordings (split `train`) back."""
    builder_class, index, builder_config = SOURCES[data.name](data)
    tfds_dir = data_root(data) / "tfds" / f"{data.name}-{index.fingerprint()}"
    builder, summary = build(builder_class, index, tfds_dir, config=builder_config,
                             max_seconds=data.max_seconds, log=log)
    source = builder.as_data_source()["train"]
    records = []
    for i in range(len(source)):
        record = source[i]
        records.append({**record, **{k: record[k].decode() for k in ("file_name", "group",
                                                                     "sublabel")}})
    records.sort(key=lambda r: r["file_name"])
    return Recordings(tuple(summary["class_names"]), records, summary)


def mel_settings(config: Any) -> MelSettings:
    return MelSettings(**{k: config.audio[k] for k in MelSettings.__dataclass_fields__})


FRONTENDS = ("librosa", "jax")


def _recording_log_mel(audio: np.ndarray, rate: int, mel: MelSettings) -> np.ndarray:
    """One recording's int16 samples at `rate` -> its log-mel at `mel.sample_rate`; the one
    function both the serial and the parallel path run, so their results are identical."""
    return log_mel(resample(audio.astype(np.float32) / 32768.0, rate, mel.sample_rate), mel)


def feature_workers(requested: int) -> int:
    """Threads that compute log-mels: `requested`, or one per core when it is 0."""
    return requested if requested > 0 else os.cpu_count() or 1


def _librosa_log_mels(records: list[dict[str, Any]], mel: MelSettings, workers: int
                      ) -> Iterator[np.ndarray]:
    """The records' log-mels in order, in `workers` threads (one: in this thread). Threads,
    not processes: soxr, numpy's FFT and BLAS release the GIL, and a worker process would
    first spend seconds importing cnnjax (benchmarks/NOTES.md)."""
    arguments = ([r["audio"] for r in records], [int(r["sample_rate"]) for r in records],
                 [mel] * len(records))
    if workers <= 1 or len(records) <= 1:
        yield from map(_recording_log_mel, *arguments)
        return
    with ThreadPoolExecutor(min(workers, len(records))) as pool:
        yield from pool.map(_recording_log_mel, *arguments)


def spectrograms(recordings: Recordings, mel: MelSettings, cache: FeatureCache,
                 frontend: str = "librosa", workers: int = 1) -> list[np.ndarray]:
    """Log-mel of every whole recording at `mel.sample_rate`, through the feature cache;
    the missing ones computed with librosa on the host in `workers` threads, each stored
    as soon as it comes back (an interrupted run keeps what it did), or all at once with
    the JAX frontend on the default device. A bar counts the recordings computed."""
    results = [cache.load(r["audio"], int(r["sample_rate"])) for r in recordings.records]
    missing = [i for i, value in enumerate(results) if value is None]
    if not missing:
        return results  # type: ignore[return-value]
    records = [recordings.records[i] for i in missing]
    if frontend == "jax":
        computed: Iterator[np.ndarray] = iter(log_mel_many(
            [resample(r["audio"].astype(np.float32) / 32768.0, int(r["sample_rate"]),
                      mel.sample_rate) for r in records], mel))
    else:
        computed = _librosa_log_mels(records, mel, workers)
    with progress_bar(len(missing), "log-mel", "recording") as bar:
        for i, value in zip(missing, computed):
            cache.store(recordings.records[i]["audio"],
                        int(recordings.records[i]["sample_rate"]), value)
            results[i] = value
            bar.update()
    return results  # type: ignore[return-value]


@dataclass
class SpectrogramDatasets(EpochBatches):
    """`Datasets` of recordings: windows of their log-mel spectrograms."""
    class_names: tuple[str, ...]
    train: SpectrogramSource
    val: SpectrogramSource
    val_file_names: list[str]
    image: ImageSettings
    augment: AugmentSettings
    batch_size: int
    eval_batch_size: int
    seed: int
    workers: int = 0
    eval_windows: str = "all"  # 'all': average over windows covering a recording; 'centre'
    augment_on_device: bool = False  # training windows cut and augmented by `device_windows`
    sampling: str = "shuffle"  # | 'balanced': every class as often | 'by_group': one group a batch

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.image.image_size, self.image.channels)

    @functools.cached_property
    def device_windows(self) -> DeviceWindows | None:
        if not self.augment_on_device:
            return None
        return DeviceWindows(resident_spectrograms(self.train.spectrograms, self.image.crop_frames,
                                                   self.train.targets), self.image, self.augment)

    def train_batches(self, epoch: int, state: bytes | None = None) -> TrainBatches:
        if self.augment_on_device:
            return IndexBatches(self.train, self.batch_size, self.seed, epoch, state,
                                jax.process_index(), jax.process_count(),
                                sampling=self.sampling)
        return super().train_batches(epoch, state)

    def _train_loader(self, epoch: int) -> Any:
        return train_loader(self.train, self.image, self.augment, batch_size=self.batch_size,
                            seed=self.seed, epoch=epoch, workers=self.workers,
                            sampling=self.sampling)

    def eval_batches(self) -> Iterator[EvalBatch]:
        return eval_batches(self.val, self.image, self.eval_batch_size, self.eval_windows)


def image_settings(config: Any, mel: MelSettings) -> ImageSettings:
    crop = max(1, round(config.data.crop_seconds * mel.sample_rate / mel.hop_length))
    return ImageSettings(crop_frames=crop, image_size=tuple(config.data.image_size),
                         channels=config.data.channels, top_db=mel.top_db,
                         normalization=config.data.normalization)


def model_inputs(config: Any, log_mels: list[np.ndarray]) -> list[np.ndarray]:
    """The whole-recording spectrograms windows are cut from: the log-mels as computed (and
    cached), each normalised on its own as `config.audio` asks (band means at the middle of
    the dB range, which `to_image` maps to 0)."""
    if config.audio.remove_band_means:
        return [remove_band_means(s, -config.audio.top_db / 2) for s in log_mels]
    return log_mels


def recording_log_mels(config: Any, recordings: Recordings) -> list[np.ndarray]:
    """Every recording's whole spectrogram as the model's windows see it (`model_inputs`),
    its log-mel with the config's settings through the feature cache under the data root."""
    mel = mel_settings(config)
    cache = FeatureCache(data_root(config.data) / "features" if config.data.feature_cache
                         else None,
                         {**dataclasses.asdict(mel), "frontend": config.audio.frontend})
    return model_inputs(config, spectrograms(recordings, mel, cache, config.audio.frontend,
                                             feature_workers(int(config.data.feature_workers))))


def split_recordings(data: Any, recordings: Recordings, fold: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices `(train, val)` of the split `data` (`config.data`) asks for, validating on
    `fold` when it has folds."""
    val_groups = tuple(data.val_groups)
    try:
        return split_indices(
            recordings.labels, recordings.groups if data.grouped or val_groups else None,
            val_fraction=data.val_fraction, seed=data.split_seed, num_folds=data.num_folds,
            fold=fold, val_groups=val_groups)
    except ValueError as error:
        raise ConfigError(f"config.data: {error}") from None


def get_datasets(config: Any) -> Datasets:
    """Loads `config.data.name`, splits its labelled recordings as `config.data` says
    (stratified hold-out, grouped, fold k of n, or named groups left out) and prepares the
    grain pipelines; an image source (`IMAGE_SOURCES`) goes to `get_image_datasets`."""
    data = config.data
    if data.name in IMAGE_SOURCES:
        return get_image_datasets(config, data_root(data))
    recordings = load_recordings(data)
    mel = mel_settings(config)
    specs = recording_log_mels(config, recordings)
    labels, targets = recordings.labels, recordings.targets
    train_idx, val_idx = split_recordings(data, recordings, data.fold)

    groups = np.asarray(recordings.groups, str)
    if data.sampling == "by_group" and len(np.unique(groups[train_idx])) < 2:
        raise ConfigError("config.data.sampling='by_group' draws each batch from one group, "
                          "and the training recordings have a single group; give the "
                          "recordings a group (audio_folder: the CSV's group column).")

    def source(indices: np.ndarray) -> SpectrogramSource:
        return SpectrogramSource([specs[i] for i in indices], labels[indices],
                                 None if targets is None else targets[indices], groups[indices])

    augment = AugmentSettings(**{f.name: config.augment[f.name]
                                 for f in dataclasses.fields(AugmentSettings)})
    datasets = SpectrogramDatasets(
        recordings.class_names, source(train_idx), source(val_idx),
        [recordings.file_names[i] for i in val_idx], image_settings(config, mel), augment,
        config.batch_size, config.eval_batch_size, config.seed, data.workers, data.eval_windows,
        config.augment.on_device, data.sampling)
    if datasets.steps_per_epoch == 0:
        raise ConfigError(f"config.batch_size={config.batch_size} is larger than the "
                          f"{len(datasets.train)} training examples.")
    return datasets
