"""TFDS dataset builders for recordings: `pascal_heartbeat` (configs set_a, set_b) and
`audio_folder`. They write `array_record` files read back with `tfds.data_source` (no
TensorFlow). Audio is stored as 16-bit samples at the file's own rate; resampling and
features happen later, so one build serves every feature setting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from cnnjax.audio.io import AudioError, read_audio, shorter_than_header
from cnnjax.data.index import Entry, Index
from cnnjax.errors import DataError

SUMMARY_FILE = "build_summary.json"


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
    """Writes the `labelled` split of an `Index`; unreadable recordings are skipped and
    counted in the index, recordings longer than `max_seconds` are cut and flagged, as are
    silent ones and files shorter than their header says."""
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Raw 16-bit audio at its own rate, label, sublabel, group, "
                              "file name."}

    def __init__(self, *, index: Index, max_seconds: float = 600.0, **kwargs: Any):
        self.index, self.max_seconds = index, max_seconds
        self.num_yielded = 0
        super().__init__(**kwargs)

    def _features(self) -> dict[str, Any]:
        return {
            "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
            "sample_rate": np.int32,
            "label": tfds.features.ClassLabel(names=list(self.index.class_names)),
            "sublabel": tfds.features.Text(),
            "group": tfds.features.Text(),
            "file_name": tfds.features.Text(),
        }

    def _fields(self, entry: Entry) -> dict[str, Any]:
        """What an example stores of its index entry besides the audio."""
        return {"label": entry.label, "sublabel": entry.sublabel, "group": entry.group,
                "file_name": entry.file_name}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=tfds.features.FeaturesDict(self._features()),
            supervised_keys=("audio", "label"))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager
                          ) -> dict[str, Iterator[tuple[str, dict[str, Any]]]]:
        return {"labelled": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for entry in self.index.entries:
            try:
                samples, rate = read_audio(entry.path, self.max_seconds)
            except AudioError as error:
                self.index.skip(error.reason, entry.file_name)
                continue
            for flag in recording_flags(entry.path, samples, rate, self.max_seconds):
                self.index.flag(flag, entry.file_name)
            self.num_yielded += 1
            yield entry.file_name, {"audio": to_int16(samples), "sample_rate": rate,
                                    **self._fields(entry)}


class PascalHeartbeat(_RecordingsBuilder):
    """PASCAL "Classifying Heart Sounds" challenge recordings (Bentley et al., 2011): the
    labelled rows of set_a (artifact, extrahls, murmur, normal; 44.1 kHz) or set_b
    (extrastole, murmur, normal; 4 kHz). `group` is the patient in set_b (the first number
    of the file name) and the recording in set_a."""
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="set_a", description="set_a, labelled"),
                       tfds.core.BuilderConfig(name="set_b", description="set_b, labelled")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the PASCAL heart-sound challenge data and give the folder that holds set_a/, "
        "set_b/, set_a.csv and set_b.csv as config.data.manual_dir.")


class AudioFolder(_RecordingsBuilder):
    """A user's recordings: one sub-folder per class, or a CSV of path,label[,group][,target];
    `target` is the CSV's number (NaN without a target column)."""
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {**_RecordingsBuilder.RELEASE_NOTES,
                     "1.1.0": "target: the CSV's numeric target column, NaN without one."}

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
                            config=config, file_format="array_record")
    summary_path = Path(builder.data_dir) / SUMMARY_FILE
    if summary_path.exists():
        return builder, json.loads(summary_path.read_text())
    log(f"building {builder.name}{'/' + config if config else ''} from "
        f"{len(index.entries)} recordings into {builder.data_dir} (once)")
    prepare(builder, index, "recordings")
    num_examples = builder.info.splits["labelled"].num_examples
    summary = {"num_examples": num_examples, "class_names": list(index.class_names),
               "skipped": index.skipped, "flagged": index.flagged,
               "text": index.summary(num_examples)}
    summary_path.write_text(json.dumps(summary, indent=2))
    log(summary["text"])
    return builder, summary
