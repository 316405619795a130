"""Audio loading and log-mel spectrogram images (librosa)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import scipy.ndimage

from cnnjax.audio.io import read_audio


@dataclass(frozen=True)
class MelSettings:
    """Log-mel settings; mirrors `config.audio`."""
    sample_rate: int = 4000
    n_fft: int = 1024
    hop_length: int = 125
    n_mels: int = 128
    fmin: float = 20.0
    fmax: float = 2000.0
    top_db: float = 80.0


def resample(samples: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """float32 samples at `sample_rate` (librosa's default soxr high-quality resampler)."""
    if rate != sample_rate:
        samples = librosa.resample(samples, orig_sr=rate, target_sr=sample_rate)
    return samples.astype(np.float32)


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples at `sample_rate`: any format soundfile reads, any input rate.
    Bad files raise `cnnjax.audio.io.AudioError`."""
    samples, rate = read_audio(path)
    return resample(samples, rate, sample_rate)


def log_mel(samples: np.ndarray, settings: MelSettings = MelSettings()) -> np.ndarray:
    """Log-mel power spectrogram in dB relative to the loudest bin, clipped at -top_db.

    Returns float32 `[n_mels, frames]`, low frequencies first. Relative dB makes the image
    independent of the recording's gain.
    """
    mel = librosa.feature.melspectrogram(
        y=samples, sr=settings.sample_rate, n_fft=settings.n_fft,
        hop_length=settings.hop_length, n_mels=settings.n_mels, fmin=settings.fmin,
        fmax=settings.fmax, power=2.0)
    db = librosa.power_to_db(mel, ref=np.max, top_db=settings.top_db)
    return db.astype(np.float32)


def remove_band_means(spectrogram: np.ndarray, level: float) -> np.ndarray:
    """The `[n_mels, frames]` dB spectrogram with every band's mean over the recording moved
    to `level` dB (per-recording normalisation, the log-mel form of cepstral mean
    normalisation).

    A stationary linear filter, such as a stethoscope's or a recording chain's frequency
    response, adds one constant per band in dB; after this the input no longer depends on it
    (nor on the gain), only on how each band changes over time.
    """
    band_means = spectrogram.mean(axis=1, keepdims=True)
    return (spectrogram - band_means + level).astype(np.float32)


def crop_frames(spectrogram: np.ndarray, width: int, start: int | None = None,
                fill: float | None = None) -> np.ndarray:
    """A `width`-frame window starting at `start` (centred when None); short ones are padded
    with `fill` (default: the spectrogram's minimum, i.e. silence)."""
    frames = spectrogram.shape[1]
    if frames < width:
        fill = float(spectrogram.min()) if fill is None else fill
        pad = width - frames
        return np.pad(spectrogram, ((0, 0), (pad // 2, pad - pad // 2)), constant_values=fill)
    start = (frames - width) // 2 if start is None else start
    return spectrogram[:, start:start + width]


def to_image(spectrogram: np.ndarray, size: tuple[int, int], top_db: float = 80.0
             ) -> np.ndarray:
    """`[height, width, 1]` float32 image: bilinear resize if needed, dB scaled to ~[-1, 1]."""
    height, width = size
    if spectrogram.shape != (height, width):
        zoom = (height / spectrogram.shape[0], width / spectrogram.shape[1])
        spectrogram = scipy.ndimage.zoom(spectrogram, zoom, order=1)
    image = (spectrogram + top_db / 2) / (top_db / 2)
    return image[..., None].astype(np.float32)
