"""TFDS dataset builders for recordings: `pascal_heartbeat` (configs set_a, set_b) and
`audio_folder`, registered with TFDS when this module is imported, so that
`tfds.builder('pascal_heartbeat/set_b', data_dir=...)` and `tfds.data_source(...)` find them.
They write `array_record` files read back with `tfds.data_source` (no TensorFlow). Audio is
stored as 16-bit samples at the file's own rate; resampling and features happen later, so one
build serves every feature setting.

Given no index, a builder reads its recordings from the download config's `manual_dir` in the
dataset's own layout; cnnjax's `build` passes the index it has already checked and
fingerprinted instead."""

from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from cnnjax.audio.io import AudioError, read_audio, shorter_than_header
from cnnjax.data.index import PASCAL_CLASSES, Entry, Index, audio_folder_index, pascal_index
from cnnjax.errors import DataError

SUMMARY_FILE = "build_summary.json"
Examples = Iterator[tuple[str, dict[str, Any]]]


def to_int16(samples: np.ndarray) -> np.ndarray:
    """soundfile's float scale (int16 / 32768), so 16-bit files round-trip exactly."""
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


def recording_flags(path: Path, samples: np.ndarray, rate: int,
                    max_seconds: float) -> list[str]:
    """What is worth knowing about a recording that was read and kept: cut at
    `max_seconds`, silent, or shorter than its header says (a file cut off)."""
    flags = []
    if samples.size >= int(max_seconds * rate):
        flags.append(f"cut to {max_seconds:g} s")
    if not np.any(samples):
        flags.append("silent")
    if shorter_than_header(path):
        flags.append("shorter than its header says")
    return flags


class _RecordingsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes the `train` split of an index (labelled recordings); unreadable recordings are
    skipped and counted in the index, recordings longer than `max_seconds` are cut and
    flagged, as are silent ones and files shorter than their header says. `index=None`:
    the index is read from `dl_manager.manual_dir` when the data is prepared."""
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"1.0.0": "Raw 16-bit audio at its own rate, label, sublabel, group, "
                              "file name.",
                     "2.0.0": "The labelled split is called train; built from the manual "
                              "dir when no index is given."}

    def __init__(self, *, index: Index | None = None, max_seconds: float = 600.0,
                 file_format: str = "array_record", **kwargs: Any):
        """`file_format` defaults to the one `tfds.data_source` reads without TensorFlow."""
        self.index, self.max_seconds = index, max_seconds
        self.num_yielded = 0
        super().__init__(file_format=file_format, **kwargs)

    def _class_names(self) -> Sequence[str]:
        """The class names known before any recording is read (empty: learnt from the
        manual dir when the data is prepared, or read back with prepared data)."""
        return self.index.class_names if self.index is not None else ()

    @abc.abstractmethod
    def _read_indexes(self, manual_dir: Path) -> dict[str, Index]:
        """Each split's index, read from the dataset's own layout in `manual_dir`."""

    def _features(self) -> dict[str, Any]:
        names = list(self._class_names())
        return {
            "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
            "sample_rate": np.int32,
            "label": tfds.features.ClassLabel(names=names or None),
            "sublabel": tfds.features.Text(),
            "group": tfds.features.Text(),
            "file_name": tfds.features.Text(),
        }

    def _fields(self, entry: Entry) -> dict[str, Any]:
        """What an example stores of its index entry besides the audio; an unlabelled
        recording's label is -1."""
        return {"label": entry.label or -1, "sublabel": entry.sublabel, "group": entry.group,
                "file_name": entry.file_name}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=tfds.features.FeaturesDict(self._features()),
            supervised_keys=("audio", "label"))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager
                          ) -> dict[str, Examples]:
        if self.index is not None:
            return {"train": self._generate_examples(self.index)}
        indexes = self._read_indexes(Path(dl_manager.manual_dir))
        self.info.features["label"].names = list(indexes["train"].class_names)
        return {split: self._reported(split, index) for split, index in indexes.items()}

    def _reported(self, split: str, index: Index) -> Examples:
        """A split's examples, then its summary in the log (a warning when anything was
        skipped or flagged); a split with nothing readable stops naming what was skipped."""
        before = self.num_yielded
        yield from self._generate_examples(index)
        text = f"{self.info.full_name} {split}: {index.summary(self.num_yielded - before)}"
        if self.num_yielded == before:
            raise DataError(f"no readable recordings in {text}")
        (logging.warning if index.skipped or index.flagged else logging.info)(text)

    def _generate_examples(self, index: Index) -> Examples:
        for entry in index.entries:
            try:
                samples, rate = read_audio(entry.path, self.max_seconds)
            except AudioError as error:
                index.skip(error.reason, entry.file_name)
                continue
            for flag in recording_flags(entry.path, samples, rate, self.max_seconds):
                index.flag(flag, entry.file_name)
            self.num_yielded += 1
            yield entry.file_name, {"audio": to_int16(samples), "sample_rate": rate,
                                    **self._fields(entry)}


class PascalHeartbeat(_RecordingsBuilder):
    """PASCAL "Classifying Heart Sounds" challenge recordings (Bentley et al., 2011), set_a
    (artifact, extrahls, murmur, normal; 44.1 kHz) or set_b (extrastole, murmur, normal;
    4 kHz): split `train` holds the labelled rows, `unlabelled` the rows without a label
    (label -1). `group` is the patient in set_b (the first number of the file name) and the
    recording in set_a."""
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="set_a", description="set_a"),
                       tfds.core.BuilderConfig(name="set_b", description="set_b")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the PASCAL heart-sound challenge data and give the folder that holds set_a/, "
        "set_b/, set_a.csv and set_b.csv as the manual dir (config.data.manual_dir in cnnjax).")

    def _class_names(self) -> Sequence[str]:
        return PASCAL_CLASSES[self.builder_config.name]

    def _read_indexes(self, manual_dir: Path) -> dict[str, Index]:
        """`train` and, when the CSV has unlabelled rows, `unlabelled`."""
        subset = self.builder_config.name
        unlabelled = pascal_index(manual_dir, subset, labelled=False)
        return {"train": pascal_index(manual_dir, subset),
                **({"unlabelled": unlabelled} if unlabelled.entries else {})}


class AudioFolder(_RecordingsBuilder):
    """A user's recordings: one sub-folder per class, or a CSV of path,label[,group][,target]
    (`csv`, its name inside the manual dir); `classes` fixes the class list. `target` is the
    CSV's number (NaN without a target column)."""
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {**_RecordingsBuilder.RELEASE_NOTES,
                     "1.1.0": "target: the CSV's numeric target column, NaN without one.",
                     "2.0.0": _RecordingsBuilder.RELEASE_NOTES["2.0.0"]}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Give the folder of recordings as the manual dir: one sub-folder per class, or a CSV "
        "with path,label columns inside it (the builder's csv argument names it).")

    def __init__(self, *, csv: str = "", classes: Sequence[str] = (), **kwargs: Any):
        self.csv, self.classes = csv, tuple(classes)
        super().__init__(**kwargs)

    def _class_names(self) -> Sequence[str]:
        return super()._class_names() or self.classes

    def _read_indexes(self, manual_dir: Path) -> dict[str, Index]:
        return {"train": audio_folder_index(manual_dir, self.csv, self.classes)}

    def _features(self) -> dict[str, Any]:
        return {**super()._features(), "target": np.float32}

    def _fields(self, entry: Entry) -> dict[str, Any]:
        return {**super()._fields(entry), "target": entry.target}


def prepare(builder: Any, index: Index, items: str) -> None:
    """Runs `builder`'s TFDS build; a build in which nothing was readable (TFDS refuses an
    empty split) ends in a DataError naming what the index skipped."""
    try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    except Exception as error:
        if builder.num_yielded == 0:
            raise DataError(f"no readable {items} for {builder.name}: "
                            f"{index.summary(0)}") from error
        raise


def build(builder_class: type[_RecordingsBuilder], index: Index, data_dir: Path, *,
          config: str | None = None, max_seconds: float = 600.0, log: Any = print
          ) -> tuple[tfds.core.DatasetBuilder, dict[str, Any]]:
    """Builds once into `data_dir` (reused afterwards) and returns the builder and the build
    summary (`build_summary.json` beside the data). An empty result is an error."""
    builder = builder_class(index=index, max_seconds=max_seconds, data_dir=str(data_dir),
                            config=config)
    summary_path = Path(builder.data_dir) / SUMMARY_FILE
    if summary_path.exists():
        return builder, json.loads(summary_path.read_text())
    log(f"building {builder.name}{'/' + config if config else ''} from "
        f"{len(index.entries)} recordings into {builder.data_dir} (once)")
    prepare(builder, index, "recordings")
    num_examples = builder.info.splits["train"].num_examples
    summary = {"num_examples": num_examples, "class_names": list(index.class_names),
               "skipped": index.skipped, "flagged": index.flagged,
               "text": index.summary(num_examples)}
    summary_path.write_text(json.dumps(summary, indent=2))
    log(summary["text"])
    return builder, summary
