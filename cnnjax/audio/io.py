"""Reading recordings defensively: every way a file can be bad becomes one `AudioError`
with a short reason, so a dataset build can skip it, count it and say why."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import soundfile as sf

from cnnjax.errors import DataError


class AudioError(DataError):
    """A recording cannot be used; `reason` is a short category for build summaries."""

    def __init__(self, path: str | Path, reason: str, detail: str = ""):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


def read_audio(path: str | Path, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] at the file's own rate, and that rate.

    Any format and sample type soundfile reads (8/16/24/32-bit int, float); channels are
    averaged. Recordings longer than `max_seconds` are cut to it (the caller counts them).
    Raises AudioError for a missing, empty, unreadable or zero-sample file and for NaN/inf
    samples.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "missing")
    if path.stat().st_size == 0:
        raise AudioError(path, "unreadable", "empty file")
    try:
        with sf.SoundFile(str(path)) as f:
            rate = f.samplerate
            frames = f.frames if max_seconds is None else min(f.frames, int(max_seconds * rate))
            samples = f.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as error:
        raise AudioError(path, "unreadable", " ".join(str(error).split())) from None
    if samples.size == 0:
        raise AudioError(path, "unreadable", "no samples")
    if not np.isfinite(samples).all():
        raise AudioError(path, "unreadable", "NaN or infinite samples")
    return samples.mean(axis=1).astype(np.float32), int(rate)


def duration_seconds(path: str | Path) -> float:
    """The recording's length from its header (no samples read)."""
    info = sf.info(str(path))
    return info.frames / info.samplerate


def shorter_than_header(path: str | Path) -> bool:
    """Whether the file ends before the samples its header announces (a copy or recording
    cut off). libsndfile then reads what is there and notes the shortfall in its log as
    `data : <header's size> (should be <size>)`; WAV and AIFF headers let it see this."""
    log = sf.info(str(path)).extra_info
    return re.search(r"^\s*(data|SSND) : \d+ \(should be \d+\)", log, re.MULTILINE) is not None
