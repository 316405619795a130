import csv

import numpy as np
import pytest
import soundfile as sf

from cnnjax.audio import SynthSettings, synthesize, write_dataset
from cnnjax.audio.synth import beat_onsets
from cnnjax.data import read_index


def band_energy_fraction(samples: np.ndarray, sample_rate: int, low: float, high: float) -> float:
    power = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1 / sample_rate)
    return float(power[(freqs >= low) & (freqs <= high)].sum() / power.sum())


def test_synthesis_is_deterministic_per_seed():
    a = synthesize("murmur", np.random.default_rng(7), duration=3.0)
    b = synthesize("murmur", np.random.default_rng(7), duration=3.0)
    c = synthesize("murmur", np.random.default_rng(8), duration=3.0)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.dtype == np.float32 and a.size == 12_000 and np.abs(a).max() <= 1.0


def test_murmurs_add_energy_above_the_heart_sounds_band():
    # S1/S2 sit at 40-190 Hz; murmurs add noise between ~120 and ~600 Hz.
    def mean_fraction(label):
        rng = np.random.default_rng(0)
        return np.mean([band_energy_fraction(synthesize(label, rng, duration=4.0), 4000,
                                             250, 600) for _ in range(8)])
    assert mean_fraction("murmur") > 5 * mean_fraction("normal")


def test_extrasystoles_add_premature_beats_and_normal_rhythm_is_regular():
    period = 60.0 / 75
    for seed in range(5):
        normal = beat_onsets(np.random.default_rng(seed), "normal", 75, 20.0)
        gaps = np.diff([t for t, _ in normal])
        assert not any(p for _, p in normal)
        assert np.all((gaps > 0.95 * period) & (gaps < 1.05 * period))
        extra = beat_onsets(np.random.default_rng(seed), "extrastole", 75, 20.0)
        onsets = [t for t, _ in extra]
        premature = [i for i, (_, p) in enumerate(extra) if p]
        assert len(premature) >= 4  # one every 2-4 beats over 25 beats
        for i in premature:
            assert 0.5 * period <= onsets[i] - onsets[i - 1] <= 0.65 * period


def test_written_dataset_has_the_set_b_layout_and_is_reused(tmp_path):
    settings = SynthSettings(num_per_class=(("normal", 3), ("murmur", 2), ("extrastole", 2)),
                             min_duration=1.0, max_duration=2.0, seed=3)
    folder = write_dataset(settings, tmp_path)
    wavs = sorted((folder / "set_b").glob("*.wav"))
    assert len(wavs) == 7 and all("__" in w.name for w in wavs)
    with open(folder / "set_b.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(r["fname"].startswith("set_b/Btraining_") for r in rows)
    info = sf.info(wavs[0])
    assert info.samplerate == 4000 and info.subtype == "PCM_16" and 1.0 <= info.duration <= 2.0
    recordings = read_index(folder, "set_b")  # resolves the CSV's spelling to the files
    assert sorted(r.label for r in recordings) == ["extrastole"] * 2 + ["murmur"] * 2 + \
        ["normal"] * 3
    mtime = wavs[0].stat().st_mtime_ns
    assert write_dataset(settings, tmp_path) == folder
    assert wavs[0].stat().st_mtime_ns == mtime


def test_unknown_class_is_refused():
    with pytest.raises(ValueError, match="normal"):
        synthesize("gallop", np.random.default_rng(0))
