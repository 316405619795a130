"""Synthetic heart sounds shaped like PASCAL set_b: normal, murmur, extrasystole.

Every recording is a train of S1/S2 ("lub-dub") sounds at a random heart rate, with
recording noise, gain and duration varying. A murmur adds band-limited noise with a
crescendo-decrescendo envelope between S1 and S2; an extrasystole adds premature beats
(an early S1/S2 pair followed by a compensatory pause). `write_dataset` writes `.wav` files
and a labels CSV in set_b's layout and naming quirks, so the default experiment reads them
with the same code as the real recordings, and beside it `heart_rate.csv`, an audio_folder
CSV (`path,label,group,target`) whose target is each recording's heart rate in beats per
minute, for regression.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

CLASSES = ("normal", "murmur", "extrastole")  # set_b's spelling of "extrasystole"
HEART_RATES = (55.0, 100.0)  # beats per minute, drawn uniformly per recording
HEART_RATE_CSV = "heart_rate.csv"
# What a dataset folder holds; a new layout gets new folders instead of reusing old ones.
# 2: heart_rate.csv beside set_b.csv.
LAYOUT = 2


@dataclass(frozen=True)
class SynthSettings:
    """Everything that determines a synthetic dataset; its hash (with the `LAYOUT`) names
    the data folder."""
    num_per_class: tuple[tuple[str, int], ...] = (("normal", 160), ("murmur", 80),
                                                   ("extrastole", 60))
    sample_rate: int = 4000
    min_duration: float = 4.0
    max_duration: float = 8.0
    seed: int = 0

    def fingerprint(self) -> str:
        fields = {**asdict(self), "layout": LAYOUT}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


def _heart_sound(rng: np.random.Generator, sample_rate: int, *, freq: float,
                 length: float) -> np.ndarray:
    """A short decaying low-frequency burst (a valve closing), Hann-windowed."""
    t = np.arange(int(length * sample_rate)) / sample_rate
    envelope = np.hanning(t.size) * np.exp(-t / (0.4 * length))
    tone = np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    tone += 0.5 * np.sin(2 * np.pi * 2.1 * freq * t + rng.uniform(0, 2 * np.pi))
    return envelope * tone


def _band_noise(rng: np.random.Generator, n: int, sample_rate: int, low: float,
                high: float) -> np.ndarray:
    """White noise band-limited to [low, high] Hz in the frequency domain, unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    spectrum[(freqs < low) | (freqs > high)] = 0
    noise = np.fft.irfft(spectrum, n)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def _add(signal: np.ndarray, start: int, burst: np.ndarray) -> None:
    end = min(signal.size, start + burst.size)
    if 0 <= start < end:
        signal[start:end] += burst[: end - start]


def beat_onsets(rng: np.random.Generator, label: str, heart_rate: float,
                duration: float) -> list[tuple[float, bool]]:
    """(onset seconds, premature?) of every beat; extrasystoles every 2-4 beats."""
    period = 60.0 / heart_rate
    onsets, t = [], rng.uniform(0.05, 0.6) * period
    beats_to_premature = int(rng.integers(1, 4))
    while t < duration:
        onsets.append((t, False))
        if label == "extrastole":
            beats_to_premature -= 1
            if beats_to_premature == 0:
                premature = t + rng.uniform(0.5, 0.65) * period
                if premature < duration:
                    onsets.append((premature, True))
                beats_to_premature = int(rng.integers(2, 5))
                t += 2 * period * rng.uniform(0.98, 1.02)  # compensatory pause
                continue
        t += period * rng.uniform(0.96, 1.04)
    return onsets


def synthesize(label: str, rng: np.random.Generator, sample_rate: int = 4000,
               duration: float = 5.0, heart_rate: float | None = None) -> np.ndarray:
    """One recording of class `label` as float32 samples in [-1, 1], at `heart_rate` beats
    per minute (drawn from `HEART_RATES` when None). An extrasystole's premature beat and
    compensatory pause take the time of two regular beats, so every class beats
    `heart_rate` times a minute on average."""
    if label not in CLASSES:
        raise ValueError(f"Unknown synthetic class {label!r}; choose one of {CLASSES}.")
    heart_rate = rng.uniform(*HEART_RATES) if heart_rate is None else heart_rate
    period = 60.0 / heart_rate
    systole = 0.33 * period**0.5  # S1 -> S2 interval shortens with the rate
    signal = np.zeros(int(duration * sample_rate))
    s1_freq, s2_freq = rng.uniform(40, 60), rng.uniform(60, 90)
    murmur_band = (rng.uniform(120, 200), rng.uniform(350, 600))
    murmur_level = rng.uniform(0.25, 0.5)
    for onset, premature in beat_onsets(rng, label, heart_rate, duration):
        loudness = rng.uniform(0.85, 1.15) * (rng.uniform(0.6, 0.8) if premature else 1.0)
        beat_systole = systole * (0.85 if premature else 1.0)
        start = int(onset * sample_rate)
        _add(signal, start, loudness * _heart_sound(rng, sample_rate, freq=s1_freq, length=0.11))
        s2_start = int((onset + beat_systole) * sample_rate)
        _add(signal, s2_start, 0.7 * loudness * _heart_sound(rng, sample_rate, freq=s2_freq,
                                                             length=0.08))
        if label == "murmur":
            m_start, m_end = start + int(0.1 * sample_rate), s2_start
            if m_end > m_start:
                n = m_end - m_start
                diamond = 1 - np.abs(np.linspace(-1, 1, n))
                _add(signal, m_start, murmur_level * diamond * _band_noise(
                    rng, n, sample_rate, *murmur_band))
    snr_db = rng.uniform(15, 35)
    noise = _band_noise(rng, signal.size, sample_rate, 20, sample_rate / 2)
    signal += noise * np.sqrt(np.mean(signal**2)) * 10 ** (-snr_db / 20)
    gain = rng.uniform(0.2, 0.9)
    return (gain * signal / (np.max(np.abs(signal)) + 1e-12)).astype(np.float32)


def default_data_root() -> Path:
    """`$CNNJAX_DATA_DIR`, else `~/.cache/cnnjax/data`."""
    root = os.environ.get("CNNJAX_DATA_DIR") or Path.home() / ".cache" / "cnnjax" / "data"
    return Path(root)


def write_dataset(settings: SynthSettings = SynthSettings(),
                  root: str | Path | None = None) -> Path:
    """Writes the dataset once into `<root>/synthetic_heartbeat-<fingerprint>` and returns it.

    The folder holds `set_b/*.wav` (16-bit PCM) named like set_b's files
    (`normal__<patient>_<timestamp>_<letter>.wav`) and `set_b.csv` whose `fname` column uses
    the CSV's own spelling (`set_b/Btraining_normal_<patient>_...`), as in the real data.
    `heart_rate.csv` lists every file with its label, patient (`group`) and heart rate
    (`target`, beats per minute). A folder that already holds a finished dataset for the
    same settings is reused.
    """
    root = default_data_root() if root is None else Path(root)
    folder = root / f"synthetic_heartbeat-{settings.fingerprint()}"
    if (folder / "synth_settings.json").exists():
        return folder
    staging = staging_folder(folder)
    (staging / "set_b").mkdir(parents=True)
    rng = np.random.default_rng(settings.seed)
    rows, rates = [], []
    for label, count in settings.num_per_class:
        for i in range(count):
            duration = rng.uniform(settings.min_duration, settings.max_duration)
            # Drawn here, as synthesize would draw it first, so the data stays as it was.
            heart_rate = rng.uniform(*HEART_RATES)
            samples = synthesize(label, rng, settings.sample_rate, duration, heart_rate)
            patient = 100 + int(rng.integers(0, 200))
            stem = f"{patient}_{1305000000000 + i * 7919 + CLASSES.index(label)}_{'ABCD'[i % 4]}"
            name = f"set_b/{label}__{stem}.wav"
            sf.write(staging / name, samples, settings.sample_rate, subtype="PCM_16")
            rows.append({"dataset": "b", "fname": f"set_b/Btraining_{label}_{stem}.wav",
                         "label": label, "sublabel": ""})
            rates.append({"path": name, "label": label, "group": str(patient),
                          "target": heart_rate})
    for file_name, fields, table in (
            ("set_b.csv", ["dataset", "fname", "label", "sublabel"], rows),
            (HEART_RATE_CSV, ["path", "label", "group", "target"], rates)):
        with open(staging / file_name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(table)
    return publish_folder(staging, folder, asdict(settings))


def staging_folder(folder: Path) -> Path:
    """An empty private folder beside `folder`: a synthetic set is written there and then
    renamed into place (`publish_folder`), so a concurrent or interrupted writer never leaves
    a half-written set under the final name."""
    staging = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def publish_folder(staging: Path, folder: Path, settings: dict) -> Path:
    """Marks `staging` finished (`synth_settings.json`, which readers check for) and renames
    it to `folder`; when another process finished first, its copy is kept."""
    (staging / "synth_settings.json").write_text(json.dumps(settings, indent=2))
    try:
        os.rename(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
