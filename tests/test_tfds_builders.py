"""The builders as a TFDS user meets them: registered by importing `cnnjax.data.builders`,
prepared from a manual dir in the dataset's own layout, read back with `tfds.data_source`."""

import csv
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

import cnnjax.data.builders  # noqa: F401  registers pascal_heartbeat and audio_folder
from cnnjax.data import canonical_name, load_recordings
from cnnjax.errors import DataError
from experiments import heartbeat_synthetic

RATE = 4000
# (name on disk, CSV fname, label): the CSV spells names as the real set_b.csv does
SET_B = [("normal__103_1305031931979_D1.wav", "Btraining_normal_103_1305031931979_D1.wav",
          "normal"),
         ("normal__106_1306776721273_B1.wav", "Btraining_normal_106_1306776721273_B1.wav",
          "normal"),
         ("murmur__112_1306243000964_A.wav", "Btraining_murmur_112_1306243000964_A.wav",
          "murmur"),
         ("extrastole__127_1306764300147_C2.wav",
          "Btraining_extrastole_127_1306764300147_C2.wav", "extrastole"),
         ("Bunlabelledtest__101_1305030823364_A.wav",
          "Bunlabelledtest_101_1305030823364_A.wav", ""),
         ("Bunlabelledtest__102_1305030823364_B.wav",
          "Bunlabelledtest_102_1305030823364_B.wav", "")]


def tone(freq: float, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_set_b(root, unreadable: str = ""):
    """A tiny set_b in the dataset's layout; `unreadable` names a file written as text."""
    (root / "set_b").mkdir(parents=True)
    for i, (name, _, _) in enumerate(SET_B):
        if name == unreadable:
            (root / "set_b" / name).write_text("not audio\n")
        else:
            sf.write(root / "set_b" / name, tone(40.0 + 10 * i), RATE, subtype="PCM_16")
    rows = [f"b,set_b/{fname},{label}," for _, fname, label in SET_B]
    (root / "set_b.csv").write_text("dataset,fname,label,sublabel\n" + "\n".join(rows) + "\n")


def prepare(name: str, data_dir, manual_dir, **builder_kwargs):
    """What the TFDS documentation tells a user to do for a manually downloaded dataset."""
    builder = tfds.builder(name, data_dir=str(data_dir), **builder_kwargs)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def read(name: str, data_dir, split: str) -> dict[str, dict]:
    """Every record of `split`, by file name, from a fresh `tfds.data_source`."""
    source = tfds.data_source(name, data_dir=str(data_dir), split=split)
    return {r["file_name"].decode(): r for r in (source[i] for i in range(len(source)))}


def csv_labels(root, subset: str) -> dict[str, str]:
    """Each CSV row's label by the canonical name of its file."""
    with open(root / f"{subset}.csv", newline="") as f:
        return {canonical_name(row["fname"]): row["label"] for row in csv.DictReader(f)}


def check_against_csv(root, records: dict[str, dict], names: list[str], labelled: bool):
    """Every record is its CSV row's recording with its row's label (-1: unlabelled), and
    every row of that kind has its record."""
    expected = {key: label for key, label in csv_labels(root, "set_b").items()
                if bool(label) == labelled}
    got = {canonical_name(name): names[r["label"]] if r["label"] >= 0 else ""
           for name, r in records.items()}
    assert got == expected
    assert all((r["label"] >= 0) == labelled for r in records.values())


def test_pascal_heartbeat_set_b_the_tfds_way(tmp_path, caplog):
    write_set_b(tmp_path / "manual", unreadable="normal__106_1306776721273_B1.wav")
    builder = prepare("pascal_heartbeat/set_b", tmp_path / "tfds", tmp_path / "manual")
    assert "normal__106_1306776721273_B1.wav" in caplog.text and "1 unreadable" in caplog.text
    names = builder.info.features["label"].names
    assert names == ["extrastole", "murmur", "normal"]
    assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
        "train": 3, "unlabelled": 2}
    train = read("pascal_heartbeat/set_b", tmp_path / "tfds", "train")
    unlabelled = read("pascal_heartbeat/set_b", tmp_path / "tfds", "unlabelled")
    assert sorted(unlabelled) == ["set_b/Bunlabelledtest__101_1305030823364_A.wav",
                                  "set_b/Bunlabelledtest__102_1305030823364_B.wav"]
    assert all(r["label"] == -1 for r in unlabelled.values())
    first = train["set_b/normal__103_1305031931979_D1.wav"]
    assert names[first["label"]] == "normal" and first["group"] == b"103"
    assert first["sample_rate"] == RATE
    original, _ = sf.read(tmp_path / "manual" / "set_b" / "normal__103_1305031931979_D1.wav",
                          dtype="int16")
    np.testing.assert_array_equal(first["audio"], original)


def test_the_tfds_way_gives_the_records_cnnjax_trains_on(tmp_path):
    write_set_b(tmp_path / "manual")
    prepare("pascal_heartbeat/set_b", tmp_path / "tfds", tmp_path / "manual")
    train = read("pascal_heartbeat/set_b", tmp_path / "tfds", "train")
    data = heartbeat_synthetic.get_config().data
    data.update(name="pascal_heartbeat", subset="set_b", manual_dir=str(tmp_path / "manual"),
                data_dir=str(tmp_path / "cache"))
    recordings = load_recordings(data, log=lambda _: None)
    assert recordings.file_names == sorted(train)
    for record in recordings.records:
        ours = train[record["file_name"]]
        np.testing.assert_array_equal(ours["audio"], record["audio"])
        assert (ours["label"], ours["group"].decode()) == (record["label"], record["group"])


def test_a_set_with_nothing_readable_stops_naming_what_was_skipped(tmp_path):
    (tmp_path / "manual" / "set_b").mkdir(parents=True)
    (tmp_path / "manual" / "set_b" / "normal__1_2_A.wav").write_text("not audio\n")
    (tmp_path / "manual" / "set_b.csv").write_text(
        "dataset,fname,label,sublabel\nb,set_b/Btraining_normal_1_2_A.wav,normal,\n")
    with pytest.raises(DataError, match=r"no readable recordings in pascal_heartbeat/set_b/"
                                        r".* train: 0 examples; skipped 1 \(1 unreadable: "
                                        r"set_b/normal__1_2_A\.wav\)"):
        prepare("pascal_heartbeat/set_b", tmp_path / "tfds", tmp_path / "manual")


@pytest.mark.slow  # about 11 s: 656 recordings
def test_real_pascal_set_b_the_tfds_way(tmp_path, pascal_dir):
    builder = prepare("pascal_heartbeat/set_b", tmp_path, pascal_dir)
    names = builder.info.features["label"].names
    train = read("pascal_heartbeat/set_b", tmp_path, "train")
    unlabelled = read("pascal_heartbeat/set_b", tmp_path, "unlabelled")
    assert (len(train), len(unlabelled)) == (461, 195)
    assert Counter(names[r["label"]] for r in train.values()) == {
        "normal": 320, "murmur": 95, "extrastole": 46}
    check_against_csv(pascal_dir, train, names, labelled=True)
    check_against_csv(pascal_dir, unlabelled, names, labelled=False)


def test_audio_folder_of_class_folders_the_tfds_way(tmp_path):
    for i, (label, name) in enumerate([("murmur", "a.wav"), ("normal", "b.flac"),
                                       ("normal", "c.wav")]):
        (tmp_path / "manual" / label).mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "manual" / label / name, tone(50.0 + 10 * i), RATE)
    builder = prepare("audio_folder", tmp_path / "tfds", tmp_path / "manual")
    assert builder.info.splits["train"].num_examples == 3
    reread = tfds.builder("audio_folder", data_dir=str(tmp_path / "tfds"))
    names = reread.info.features["label"].names
    assert names == ["murmur", "normal"]  # learnt from the folders, kept with the data
    records = read("audio_folder", tmp_path / "tfds", "train")
    assert {f: names[r["label"]] for f, r in records.items()} == {
        "murmur/a.wav": "murmur", "normal/b.flac": "normal", "normal/c.wav": "normal"}
    assert all(np.isnan(r["target"]) for r in records.values())


def test_audio_folder_with_a_csv_the_tfds_way(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    for i in range(3):
        sf.write(manual / f"r{i}.wav", tone(50.0 + 10 * i), RATE)
    (manual / "labels.csv").write_text("path,label,group,target\nr0.wav,slow,p1,60\n"
                                       "r1.wav,fast,p1,120\nr2.wav,gallop,p2,90\n")
    prepare("audio_folder", tmp_path / "tfds", manual, csv="labels.csv",
            classes=("fast", "slow"))
    records = read("audio_folder", tmp_path / "tfds", "train")
    assert sorted(records) == ["r0.wav", "r1.wav"]  # gallop is not one of the classes
    assert [(r["label"], r["group"], float(r["target"])) for _, r in sorted(records.items())] \
        == [(1, b"p1", 60.0), (0, b"p1", 120.0)]
