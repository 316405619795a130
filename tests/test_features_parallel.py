"""Log-mels computed in worker threads are the serial path's, bit for bit, go into the
feature cache, and a bar counts them."""

import os

import numpy as np

from cnnjax.audio.features import MelSettings
from cnnjax.data.datasets import Recordings, feature_workers, spectrograms
from cnnjax.data.feature_cache import FeatureCache

MEL = MelSettings(sample_rate=2000, n_fft=256, hop_length=25, n_mels=64, fmin=20.0,
                  fmax=800.0)


def _recordings(count: int) -> Recordings:
    """Noisy tones of different lengths at 2 and 4 kHz (the second resampled), as int16."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        rate = 2000 if i % 2 else 4000
        t = np.arange(int(rate * (1.5 + 0.5 * i))) / rate
        wave = 0.3 * np.sin(2 * np.pi * (60 + 20 * i) * t) + 0.05 * rng.standard_normal(len(t))
        records.append({"audio": (wave * 32767).astype(np.int16), "sample_rate": rate})
    return Recordings(("a",), records, {})


def test_parallel_log_mels_equal_the_serial_ones_and_are_cached(tmp_path):
    recordings = _recordings(6)
    serial = spectrograms(recordings, MEL, FeatureCache(None, {}), workers=1)
    parallel = spectrograms(recordings, MEL, FeatureCache(tmp_path, {"n": 1}), workers=2)
    for a, b in zip(serial, parallel, strict=True):
        assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b)
    again = FeatureCache(tmp_path, {"n": 1})
    spectrograms(recordings, MEL, again, workers=2)
    assert (again.hits, again.misses) == (6, 0)


def test_feature_computation_shows_a_count_and_rate(capsys):
    spectrograms(_recordings(3), MEL, FeatureCache(None, {}), workers=1)
    err = capsys.readouterr().err
    assert "log-mel" in err and "3/3" in err and "recording/s" in err


def test_zero_workers_means_every_core():
    assert feature_workers(0) == os.cpu_count()
    assert feature_workers(1) == 1 and feature_workers(3) == 3
