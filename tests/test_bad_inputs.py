"""A corpus of hostile inputs run through the real command (`python -m cnnjax.main`), as a
user would meet them: bad recordings and images in the `audio_folder` and `image_folder`
sources, bad CSVs, the same recordings through `--mode=predict`, unsafe or unfitting files
in `config.init.pretrained`, and config values of the wrong type.

Each input must end in a count in the build summary (skipped, or kept and flagged, with the
reason and the name) or in one clear line naming the thing and the fix; never in a
traceback, a hang or a silently wrong result. README's data section has the same table.

Subprocesses cost seconds of imports each, so the corpus is built once and the cases that
can share a run do: one audio folder and one image folder hold every bad file, and only
the inputs that stop a run (a broken CSV, a refused weights file, a bad config value) get
one of their own.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from cnnjax.data.image_builders import image_folder_index
from cnnjax.data.index import audio_folder_index
from cnnjax.errors import DataError
from cnnjax.models import resnet34
from cnnjax.pretrained.files import write_safetensors
from cnnjax.pretrained.porting import write_converted
from conftest import REPO

RATE = 4000
MAX_SECONDS = 30  # config.data.max_seconds in every run: the 10-hour file is cut to this
TIMEOUT = 300  # seconds; a run that takes longer counts as a hang
# What a run may hold in memory at its peak. The 10-hour recording read whole would take
# 6.4 GB as float32 samples; a tiny run takes well under 1.5 GB.
PEAK_MEMORY_MB = 2500
SMALL = ["--config.num_epochs=1", "--config.batch_size=4", "--config.eval_batch_size=8",
         f"--config.data.max_seconds={MAX_SECONDS}"]
CLASSES = ("murmur", "normal")
# The recordings as 1-second log-mel windows at 32x32, classified as murmur or normal.
RECORDINGS = [*SMALL, "--config.data.name=audio_folder", f"--config.data.classes={CLASSES}",
              "--config.data.image_size=(32,32)", "--config.data.crop_seconds=1.0"]
AUDIO = ["--config=experiments/heartbeat_rate_regression.py", *RECORDINGS,  # a small SimpleCNN
         "--config.loss.name=softmax_cross_entropy",
         "--config.checkpoint.best_metric=val_accuracy", "--config.checkpoint.best_mode=max",
         "--config.model.widths=(4,8)", "--config.model.dense=(8,)"]
RESNET = RECORDINGS  # the default experiment's ResNet-18, for torchvision weights files
IMAGES = ["--config=experiments/cats_vs_dogs_cnn.py", *SMALL,
          "--config.data.name=image_folder", "--config.data.image_size=(16,16)",
          "--config.model.widths=(4,8)", "--config.model.dense=(8,)"]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    peak_memory_mb: float

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("cnnjax: error:")]


def run_main(*args: str, data_dir: Path) -> Run:
    """`python -m cnnjax.main *args` with its own data directory, where compiled programs
    are cached for the next run as launch.sh caches them. It is waited for with `os.wait4`
    to learn its peak memory, where a recording read whole would show first."""
    env = dict(os.environ, CNNJAX_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO),
               JAX_COMPILATION_CACHE_DIR=str(data_dir / "jax_cache"))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-m", "cnnjax.main", *args], cwd=REPO,
                                   env=env, stdout=out, stderr=err, text=True)
        deadline = time.monotonic() + TIMEOUT
        while not (waited := os.wait4(process.pid, os.WNOHANG))[0]:
            if time.monotonic() > deadline:
                process.kill()
                os.wait4(process.pid, 0)
                pytest.fail(f"cnnjax.main {' '.join(args)} hung for {TIMEOUT} s")
            time.sleep(0.1)
        _, status, usage = waited
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        peak_kib = usage.ru_maxrss / (1024 if sys.platform == "darwin" else 1)  # macOS: bytes
        return Run(process.returncode, out.read(), err.read(), peak_kib / 1024)


def assert_ends(run: Run, returncode: int) -> None:
    """The run exited with `returncode`, printed no traceback and stayed small."""
    assert run.returncode == returncode, run.stderr[-3000:]
    assert "Traceback" not in run.stderr + run.stdout, run.stderr[-3000:]
    assert run.peak_memory_mb < PEAK_MEMORY_MB


def assert_one_error(run: Run, returncode: int, *words: str) -> None:
    """The run stopped with exactly one error line, which holds each of `words`."""
    assert_ends(run, returncode)
    assert len(run.error_lines) == 1, run.stderr[-3000:]
    for word in words:
        assert word in run.error_lines[0], run.error_lines[0]


def tone(freq: float, seconds: float = 2.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, subtype: str = "PCM_16") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, RATE, subtype=subtype, format="WAV")


def write_ten_hours(path: Path, rate: int = 44100) -> None:
    """A 16-bit WAV whose header truthfully announces 10 hours at 44.1 kHz (3.2 GB): 2 s of
    tone, then zeros left as a hole in a sparse file, so it costs no disk or time here."""
    data_bytes = 10 * 3600 * rate * 2
    header = (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
              + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)
              + b"data" + struct.pack("<I", data_bytes))
    with open(path, "wb") as f:
        f.write(header + (tone(60.0, rate=rate) * 32767).astype("<i2").tobytes())
        f.truncate(len(header) + data_bytes)


def write_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), np.uint8)
    Image.fromarray(pixels).save(path)


class RunsCode:
    """A pickle that, if unpickled freely, writes `marker`: what a malicious .pth does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",)


def write_recordings(audio: Path, outside: Path) -> None:
    """Class folders murmur/ and normal/ of six good recordings each; every bad file in
    normal/; a class folder that config.data.classes leaves out; a recording beside them."""
    for label, freq in (("murmur", 60.0), ("normal", 150.0)):
        for i in range(6):
            write_wav(audio / label / f"ok{i}.wav", tone(freq * (1 + 0.05 * i)))
    bad = audio / "normal"
    good = (bad / "ok0.wav").read_bytes()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "cut_in_header.wav").write_bytes(good[:30])
    (bad / "cut_in_samples.wav").write_bytes(good[:len(good) // 2])
    (bad / "html.wav").write_text("<html><body>404 not found</body></html>\n")
    nan = tone(150.0)
    nan[100] = np.nan
    write_wav(bad / "nan.wav", nan, subtype="FLOAT")
    write_wav(bad / "zero_length.wav", np.zeros(0, np.float32))
    write_wav(bad / "silent.wav", np.zeros(2 * RATE, np.float32))
    write_ten_hours(bad / "ten_hours.wav")
    (bad / "notes.txt").write_text("recorded on a Monday\n")
    write_wav(bad / "wav_named.flac", tone(150.0))
    write_wav(outside / "secret.wav", tone(150.0))
    (bad / "link_out.wav").symlink_to(outside / "secret.wav")
    write_wav(audio / "gallop" / "g0.wav", tone(90.0))
    write_wav(audio / "loose.wav", tone(90.0))


def write_csvs(audio: Path) -> None:
    """`labels.csv` (a byte-order mark, CRLF line ends, a duplicate row, an unknown label,
    an unlabelled row, a missing file) and one CSV for each problem that stops a build."""
    def write(name: str, lines: list[str], encoding: str = "utf-8") -> None:
        with open(audio / name, "w", newline="", encoding=encoding) as f:
            f.write("".join(lines))

    goods = [f"{label}/ok{i}.wav,{label},p{i},{70 + i}\r\n"
             for label in ("murmur", "normal") for i in range(6)]
    write("labels.csv", ["path,label,group,target\r\n", *goods,
                         "murmur/ok0.wav,murmur,p0,70\r\n", "gallop/g0.wav,gallop,p7,90\r\n",
                         "normal/silent.wav,,p8,60\r\n", "normal/gone.wav,normal,p9,60\r\n"],
          encoding="utf-8-sig")
    write("no_label_column.csv", ["path,class\n", "murmur/ok0.wav,murmur\n"])
    write("bad_target.csv", ["path,label,target\n", "murmur/ok0.wav,murmur,70\n",
                             "normal/ok0.wav,normal,fast\n"])
    write("escaping.csv", ["path,label\n", "murmur/ok0.wav,murmur\n",
                           "../outside/secret.wav,normal\n", "normal/link_out.wav,normal\n"])
    write("latin1.csv", ["path,label\n", "murmur/ok0.wav,murmur\n", "normal/ok0.wav,mélange\n"],
          encoding="latin-1")


def write_images(images: Path, outside: Path) -> None:
    """Class folders cat/ and dog/ of six good images each; every bad file in dog/; an
    image beside them."""
    for label in ("cat", "dog"):
        for i in range(6):
            write_png(images / label / f"ok{i}.png", seed=i + (10 if label == "dog" else 0))
    bad = images / "dog"
    jpeg = io.BytesIO()
    Image.open(bad / "ok0.png").save(jpeg, "JPEG")
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "truncated.jpg").write_bytes(jpeg.getvalue()[:len(jpeg.getvalue()) // 2])
    (bad / "html.png").write_text("<html><body>404 not found</body></html>\n")
    (bad / "notes.txt").write_text("taken on a Monday\n")
    (bad / "png_named.jpg").write_bytes((bad / "ok1.png").read_bytes())
    write_png(outside / "secret.png", seed=99)
    (bad / "link_out.png").symlink_to(outside / "secret.png")
    write_png(images / "loose.png", seed=98)


@dataclass
class Corpus:
    root: Path
    audio: Path  # recordings (write_recordings) and CSVs (write_csvs)
    images: Path
    data_dir: Path  # shared by every run: a build is made once and reused


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    root = tmp_path_factory.mktemp("bad_inputs")
    corpus = Corpus(root, root / "audio", root / "images", root / "data")
    write_recordings(corpus.audio, root / "outside")
    write_csvs(corpus.audio)
    write_images(corpus.images, root / "outside")
    return corpus


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A folder of weights files that must be refused: a pickle that would run code (it
    writes `unpickled` beside them), a cut safetensors file, ResNet-34 weights."""
    folder = tmp_path_factory.mktemp("weights")
    (folder / "malicious.pth").write_bytes(pickle.dumps(RunsCode(folder / "unpickled")))
    write_safetensors(folder / "whole.safetensors",
                      {"params/conv1/kernel": np.ones((7, 7, 3, 64), np.float32)}, {})
    whole = (folder / "whole.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(whole[:len(whole) // 2])
    shapes = jax.eval_shape(lambda: resnet34(num_classes=1000).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))
    write_converted(folder / "resnet34.safetensors",
                    jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), "resnet34", {})
    return folder


# The CSVs of write_csvs that stop a build, and what the one error line says.
BROKEN_CSVS = [
    ("no_label_column.csv", ["no_label_column.csv must have the columns path,label",
                             "it has ['path', 'class']"]),
    ("bad_target.csv", ["bad_target.csv: the target column must hold a number",
                        "line 3 ('fast') does not"]),
    ("escaping.csv", ["2 paths in", "are refused: ../outside/secret.wav, normal/link_out.wav",
                      "list only files inside it"]),
    ("latin1.csv", ["latin1.csv is not UTF-8 text", "save it as UTF-8"]),
]


def test_listing_the_folders_counts_what_it_skips_before_reading_a_file(corpus):
    """The cases decided before any file is opened, in-process, so that the default run
    (without the slow end-to-end cases below) checks them too."""
    folders = audio_folder_index(corpus.audio, classes=CLASSES)
    assert sorted(folders.skipped) == [
        ("link leaving the data folder", "normal/link_out.wav"),
        ("not an audio file name", "normal/notes.txt"), ("outside a class folder", "loose.wav"),
        ("unknown label", "gallop/g0.wav (gallop)")]
    listed = audio_folder_index(corpus.audio, "labels.csv", CLASSES)
    first = listed.entries[0]
    assert (first.file_name, first.label, first.group, first.target) == (
        "murmur/ok0.wav", "murmur", "p0", 70.0)  # no BOM in the header, no CR in the cells
    assert len(listed.entries) == 12 and sorted(reason for reason, _ in listed.skipped) == [
        "duplicate", "missing", "unknown label", "unlabelled"]
    for csv_name, words in BROKEN_CSVS:
        with pytest.raises(DataError) as error:
            audio_folder_index(corpus.audio, csv_name)
        assert all(word in str(error.value) for word in words), str(error.value)
    images = image_folder_index(corpus.images)
    assert sorted(images.skipped) == [
        ("link leaving the data folder", "dog/link_out.png"),
        ("not an image file name", "dog/notes.txt"), ("outside a class folder", "loose.png")]


def build_summary(corpus: Corpus) -> dict:
    """`build_summary.json` of the audio folder's build (found by the index's fingerprint,
    as the build names its folder)."""
    fingerprint = audio_folder_index(corpus.audio, classes=CLASSES).fingerprint()
    found = (corpus.data_dir / "tfds" / f"audio_folder-{fingerprint}").rglob("build_summary.json")
    return json.loads(next(found).read_text())


@pytest.fixture(scope="module")
def audio_run(corpus) -> tuple[Run, Path]:
    """The audio folder with every bad file, trained for one epoch: (run, workdir)."""
    workdir = corpus.root / "audio_run"
    run = run_main(f"--workdir={workdir}", *AUDIO, f"--config.data.manual_dir={corpus.audio}",
                   data_dir=corpus.data_dir)
    return run, workdir


@pytest.mark.slow
def test_bad_recordings_in_class_folders_are_counted_by_name(corpus, audio_run):
    run, _ = audio_run
    assert_ends(run, 0)
    built = build_summary(corpus)
    assert sorted(built["skipped"]) == [
        ["link leaving the data folder", "normal/link_out.wav"],
        ["not an audio file name", "normal/notes.txt"],
        ["outside a class folder", "loose.wav"],
        ["unknown label", "gallop/g0.wav (gallop)"],
        ["unreadable", "normal/cut_in_header.wav"],
        ["unreadable", "normal/empty.wav"],
        ["unreadable", "normal/html.wav"],
        ["unreadable", "normal/nan.wav"],
        ["unreadable", "normal/zero_length.wav"]]
    assert sorted(built["flagged"]) == [
        [f"cut to {MAX_SECONDS} s", "normal/ten_hours.wav"],
        ["shorter than its header says", "normal/cut_in_samples.wav"],
        ["silent", "normal/silent.wav"]]
    # Kept: the 12 good ones, the three flagged ones and the WAV named .flac.
    assert built["text"].startswith("16 examples; skipped 9 (")
    assert built["text"] in run.stderr
    assert "11 train / 5 validation examples, classes ['murmur', 'normal']" in run.stderr


@pytest.mark.slow
def test_csv_with_bom_crlf_duplicates_and_unknown_labels_is_read_and_counted(corpus,
                                                                            audio_run):
    run = run_main(f"--workdir={corpus.root / 'csv_run'}", *AUDIO, "--config.data.csv=labels.csv",
                   f"--config.data.manual_dir={corpus.audio}", data_dir=corpus.data_dir)
    assert_ends(run, 0)
    assert ("12 examples; skipped 4 (1 duplicate: murmur/ok0.wav; 1 missing: normal/gone.wav; "
            "1 unknown label: gallop/g0.wav (gallop); 1 unlabelled: normal/silent.wav)"
            in run.stderr)
    assert "8 train / 4 validation examples, classes ['murmur', 'normal']" in run.stderr


@pytest.mark.slow
@pytest.mark.parametrize("csv_name, words", BROKEN_CSVS)
def test_a_broken_csv_stops_the_run_naming_it_and_the_fix(corpus, csv_name, words):
    run = run_main(f"--workdir={corpus.root / 'broken_csv'}", *AUDIO,
                   f"--config.data.csv={csv_name}", f"--config.data.manual_dir={corpus.audio}",
                   data_dir=corpus.data_dir)
    assert_one_error(run, 1, *words)


@pytest.mark.slow
def test_predict_names_each_unreadable_recording_and_notes_cut_ones(corpus, audio_run):
    _, workdir = audio_run
    names = ["ok0.wav", "empty.wav", "cut_in_header.wav", "cut_in_samples.wav", "html.wav",
             "nan.wav", "zero_length.wav", "silent.wav", "ten_hours.wav", "notes.txt",
             "gone.wav"]
    inputs = [str(corpus.audio / "normal" / name) for name in names]
    run = run_main(f"--workdir={workdir}", "--mode=predict",
                   f"--predict.inputs={','.join(inputs)}", data_dir=corpus.data_dir)
    assert_ends(run, 0)
    with open(workdir / "predictions.csv", newline="") as f:
        rows = {Path(row["file"]).name: row for row in csv.DictReader(f)}
    errors = {name: row["error"] for name, row in rows.items() if row["error"]}
    libsndfile = "unreadable (Error opening"  # then libsndfile's words
    expected = {"empty.wav": "unreadable (empty file)", "cut_in_header.wav": libsndfile,
                "html.wav": libsndfile, "nan.wav": "unreadable (NaN or infinite samples)",
                "zero_length.wav": "unreadable (no samples)", "notes.txt": libsndfile,
                "gone.wav": "missing"}
    assert errors.keys() == expected.keys()
    for name, start in expected.items():
        assert errors[name].startswith(start), errors[name]
    for name, error in errors.items():
        assert f"skipped {corpus.audio / 'normal' / name}: {error}" in run.stderr
        assert rows[name]["predicted"] == ""
    for name in ("ok0.wav", "cut_in_samples.wav", "silent.wav", "ten_hours.wav"):
        assert rows[name]["predicted"] in CLASSES
    for name, note in (("ten_hours.wav", f"cut to {MAX_SECONDS} s"), ("silent.wav", "silent"),
                       ("cut_in_samples.wav", "shorter than its header says")):
        assert f"note: {corpus.audio / 'normal' / name} is {note}" in run.stderr
    assert "predicted 4 of 11 recordings" in run.stderr


@pytest.mark.slow
def test_bad_images_are_counted_by_name(corpus):
    run = run_main(f"--workdir={corpus.root / 'image_run'}", *IMAGES,
                   f"--config.data.manual_dir={corpus.images}", data_dir=corpus.data_dir)
    assert_ends(run, 0)
    assert ("13 examples; skipped 6 (1 empty: dog/empty.jpg; 1 link leaving the data folder: "
            "dog/link_out.png; 1 not an image: dog/html.png; 1 not an image file name: "
            "dog/notes.txt; 1 outside a class folder: loose.png; 1 truncated or corrupt: "
            "dog/truncated.jpg)") in run.stderr


def test_the_malicious_pickle_would_run_code_if_unpickled(tmp_path):
    """Without this, the refusal below could pass with a payload that does nothing."""
    pickle.loads(pickle.dumps(RunsCode(tmp_path / "unpickled")))
    assert (tmp_path / "unpickled").read_text() == "unpickled"


@pytest.mark.slow
@pytest.mark.parametrize("name, words", [
    ("malicious.pth", ["malicious.pth", "refused unread" if importlib.util.find_spec("torch")
                       else "needs PyTorch"]),
    ("truncated.safetensors", ["truncated.safetensors could not be read as a .safetensors "
                               "file; it may be truncated"]),
    ("resnet34.safetensors", ["resnet34.safetensors does not fit cnnjax's resnet18 (it looks "
                              "like resnet34", "config.model.name='resnet34'"]),
])
def test_a_bad_weights_file_is_refused_naming_it(corpus, audio_run, weights, name, words):
    """After `audio_run`, whose build and features these runs reuse."""
    run = run_main(f"--workdir={corpus.root / 'pretrained_run'}", *RESNET,
                   f"--config.data.manual_dir={corpus.audio}",
                   f"--config.init.pretrained={weights / name}", data_dir=corpus.data_dir)
    assert_one_error(run, 1, *words)
    assert not (weights / "unpickled").exists()


@pytest.mark.slow
@pytest.mark.parametrize("flag, words", [
    ("--config.data.max_seconds=ten", ["--config.data.max_seconds=ten",
                                       "could not convert string to float"]),
    ("--config.data.image_size=32", ["config.data.image_size=(32,) must be two positive "
                                     "whole numbers", "--config.data.image_size='(128,128)'"]),
])
def test_a_config_value_of_the_wrong_type_stops_the_run_naming_the_field(corpus, flag, words):
    run = run_main(f"--workdir={corpus.root / 'config_run'}", "--config.data.name=audio_folder",
                   f"--config.data.manual_dir={corpus.audio}", flag, data_dir=corpus.data_dir)
    assert_one_error(run, 2, *words)
