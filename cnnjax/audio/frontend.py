"""On-device log-mel spectrograms in JAX: the same numbers as `cnnjax.audio.features.log_mel`.

`log_mel(samples, settings)` runs librosa on the host, one recording at a time.
`log_mel_jax(waveforms, settings)` computes the same log-mel for a whole batch inside a jitted
function, so spectrograms can be made on the accelerator next to the model (for instance after
waveform-level augmentation). It follows librosa step by step:

1. centre padding with `n_fft // 2` zeros on each side (librosa's default `pad_mode='constant'`);
2. frames every `hop_length` samples, times a periodic Hann window (`scipy.signal.get_window`);
3. `jnp.fft.rfft` of each frame, power `|X|**2`;
4. projection onto `librosa.filters.mel` (Slaney mel scale, Slaney area normalisation — the
   defaults `librosa.feature.melspectrogram` uses), computed once on the host;
5. `librosa.power_to_db(ref=np.max, amin=1e-10, top_db=settings.top_db)`, where the reference
   maximum and the `top_db` floor are taken per example.

The FFT runs in float32 (librosa's runs in float64 and rounds to complex64), so the two differ
by at most about 2e-3 dB on the PASCAL heart-sound recordings, in the quietest bins just above
the `-top_db` floor; bins clipped to the floor agree exactly.

    frontend = MelFrontend.create(MelSettings())      # window + filter bank, cached
    spectrograms = jax.jit(frontend)(waveforms)       # [B, T] -> [B, n_mels, 1 + T // hop]
    # or, equivalently:
    spectrograms = jax.jit(log_mel_jax, static_argnames="settings")(waveforms, settings)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import librosa
import numpy as np

from cnnjax.audio.features import MelSettings

AMIN = 1e-10
"""Power floor before the logarithm; librosa.power_to_db's default, which `log_mel` uses."""


def num_frames(num_samples: int, settings: MelSettings) -> int:
    """Frames of a centred STFT of `num_samples` samples: `1 + num_samples // hop_length` for
    even `n_fft`, as librosa counts them."""
    half = settings.n_fft // 2
    return 1 + (num_samples + 2 * half - settings.n_fft) // settings.hop_length


@dataclass(frozen=True, eq=False)
class MelFrontend:
    """Host-side constants of the log-mel, ready for a jitted function to close over.

    Build it with `MelFrontend.create(settings)` (cached per settings); call it on waveforms
    `[..., T]` to get `[..., n_mels, frames]` log-mel in dB.
    """
    settings: MelSettings
    window: np.ndarray      # [n_fft] float32, periodic Hann
    mel_basis: np.ndarray   # [n_mels, 1 + n_fft // 2] float32

    @staticmethod
    def create(settings: MelSettings = MelSettings()) -> MelFrontend:
        return _frontend(settings)

    def __call__(self, waveforms: jax.Array) -> jax.Array:
        return _log_mel(self, waveforms)


@functools.lru_cache(maxsize=32)
def _frontend(settings: MelSettings) -> MelFrontend:
    if settings.n_fft < 2 or settings.hop_length < 1:
        raise ValueError(f"log-mel needs n_fft >= 2 and hop_length >= 1, got "
                         f"n_fft={settings.n_fft}, hop_length={settings.hop_length}; "
                         "fix the audio settings of the config.")
    # The same window and filter bank that librosa.feature.melspectrogram builds.
    window = librosa.filters.get_window("hann", settings.n_fft, fftbins=True)
    mel_basis = librosa.filters.mel(
        sr=settings.sample_rate, n_fft=settings.n_fft, n_mels=settings.n_mels,
        fmin=settings.fmin, fmax=settings.fmax)
    window = np.asarray(window, np.float32)
    mel_basis = np.asarray(mel_basis, np.float32)
    window.setflags(write=False)
    mel_basis.setflags(write=False)
    return MelFrontend(settings=settings, window=window, mel_basis=mel_basis)


def log_mel_jax(waveforms: jax.Array, settings: MelSettings = MelSettings()) -> jax.Array:
    """Log-mel power spectrograms of a batch of waveforms, in dB relative to each example's
    loudest bin and clipped at `-settings.top_db`: `librosa` numbers computed in JAX.

    `waveforms` is `[B, T]` (any leading batch shape, or none) float32 at
    `settings.sample_rate`; returns float32 `[B, n_mels, 1 + T // hop_length]`, low
    frequencies first — per example, the same as `cnnjax.audio.features.log_mel`.
    Pure and jittable; under `jax.jit` pass `settings` as a static argument
    (`static_argnames="settings"`) or close over a `MelFrontend`.
    """
    return _log_mel(MelFrontend.create(settings), waveforms)


def mel_power(frontend: MelFrontend, waveforms: jax.Array) -> jax.Array:
    """Mel power spectrogram `[..., n_mels, frames]` before the dB conversion (librosa's
    `melspectrogram(power=2)`); `log_mel_jax` is `power_to_db` of it."""
    settings = frontend.settings
    waveforms = jnp.asarray(waveforms)
    if waveforms.ndim < 1:
        raise ValueError("log_mel_jax needs waveforms shaped [batch, samples], got a scalar; "
                         "pass an array of samples.")
    if not jnp.issubdtype(waveforms.dtype, jnp.floating):
        raise ValueError(f"log_mel_jax needs float waveforms, got dtype {waveforms.dtype}; "
                         "convert the samples to float32 in [-1, 1] first.")
    waveforms = waveforms.astype(jnp.float32)
    num_samples = waveforms.shape[-1]
    frames = num_frames(num_samples, settings)
    if frames < 1:
        raise ValueError(f"log_mel_jax got {num_samples} samples, too few for one frame with "
                         f"n_fft={settings.n_fft}; pass longer waveforms.")

    # Centred frames, zero padding (librosa.stft's default pad_mode='constant').
    half = settings.n_fft // 2
    padded = jnp.pad(waveforms, [(0, 0)] * (waveforms.ndim - 1) + [(half, half)])
    index = (settings.hop_length * np.arange(frames)[:, None]
             + np.arange(settings.n_fft)[None, :])
    framed = padded[..., index] * frontend.window                    # [..., frames, n_fft]

    spectrum = jnp.fft.rfft(framed, axis=-1)                         # [..., frames, bins]
    power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
    mel = jnp.matmul(frontend.mel_basis, jnp.swapaxes(power, -1, -2),
                     precision=jax.lax.Precision.HIGHEST)            # [..., n_mels, frames]
    return mel


def _log_mel(frontend: MelFrontend, waveforms: jax.Array) -> jax.Array:
    return power_to_db(mel_power(frontend, waveforms), frontend.settings.top_db)


def power_to_db(power: jax.Array, top_db: float | None) -> jax.Array:
    """`librosa.power_to_db(power, ref=np.max, amin=1e-10, top_db=top_db)` with the maximum
    and the floor taken over the last two axes, i.e. per example of a `[..., F, T]` batch."""
    ref = jnp.max(power, axis=(-2, -1), keepdims=True)
    db = 10.0 * jnp.log10(jnp.maximum(power, AMIN)) - 10.0 * jnp.log10(jnp.maximum(ref, AMIN))
    if top_db is not None:
        if top_db < 0:
            raise ValueError(f"top_db must be non-negative, got {top_db}; fix the audio "
                             "settings of the config.")
        db = jnp.maximum(db, jnp.max(db, axis=(-2, -1), keepdims=True) - top_db)
    return db


def log_mel_many(recordings: list[np.ndarray], settings: MelSettings = MelSettings(),
                 batch_size: int = 16) -> list[np.ndarray]:
    """`log_mel_jax` of recordings of different lengths, each `[n_mels, 1 + T // hop]` as
    numpy, equal to computing them one by one.

    Recordings are zero-padded to the next power-of-two length and batched, so one program
    is compiled per such length and nothing per recording (converting each recording's frames
    in a program of its own shape compiled once per distinct length: 13 clips/s cold against
    librosa's 147). The padded tail only adds frames after the real ones; they are zeroed
    before the dB conversion, so each recording's reference maximum is its own, and cut off.
    """
    frontend = MelFrontend.create(settings)
    padded_log_mel = jax.jit(functools.partial(_padded_log_mel, frontend))
    buckets: dict[int, list[int]] = {}
    for i, samples in enumerate(recordings):
        length = max(1 << max(int(samples.size) - 1, 1).bit_length(), settings.n_fft)
        buckets.setdefault(length, []).append(i)
    results: list[np.ndarray | None] = [None] * len(recordings)
    for length, members in sorted(buckets.items()):
        for first in range(0, len(members), batch_size):
            chosen = members[first:first + batch_size]
            batch = np.zeros((batch_size, length), np.float32)
            frames = np.zeros(batch_size, np.int32)
            for row, i in enumerate(chosen):
                batch[row, :recordings[i].size] = recordings[i]
                frames[row] = num_frames(recordings[i].size, settings)
            db = np.asarray(padded_log_mel(batch, frames))
            for row, i in enumerate(chosen):
                results[i] = db[row, :, :frames[row]].copy()
    return results  # type: ignore[return-value]


def _padded_log_mel(frontend: MelFrontend, batch: jax.Array, frames: jax.Array) -> jax.Array:
    """`log_mel_jax` of zero-padded waveforms whose first `frames[b]` frames are real."""
    power = mel_power(frontend, batch)
    real = jnp.arange(power.shape[-1]) < frames[:, None, None]
    return power_to_db(jnp.where(real, power, 0.0), frontend.settings.top_db)
