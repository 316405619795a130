"""An on-disk cache of spectrograms keyed by the recording's samples and every feature
setting: a second run with the same settings reads them back, a changed setting never
sees stale ones (it looks in another folder)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

FEATURE_VERSION = 1  # bump when the feature code changes what it computes


class FeatureCache:
    """`get(samples, rate, compute)`: the cached array, or `compute()` stored for next time.
    `root=None` disables caching."""

    def __init__(self, root: str | Path | None, settings: dict[str, Any]):
        self.hits = self.misses = 0
        self.folder = None
        if root is not None:
            text = json.dumps({"version": FEATURE_VERSION, **settings}, sort_keys=True)
            self.folder = Path(root) / hashlib.sha256(text.encode()).hexdigest()[:16]
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / "settings.json").write_text(text)

    def _path(self, samples: np.ndarray, rate: int) -> Path:
        digest = hashlib.sha256(np.ascontiguousarray(samples).tobytes())
        digest.update(f"|{samples.dtype}|{rate}".encode())
        return self.folder / f"{digest.hexdigest()[:32]}.npy"

    def load(self, samples: np.ndarray, rate: int) -> np.ndarray | None:
        """The cached array for this recording, or None (absent, disabled or unreadable)."""
        if self.folder is None:
            self.misses += 1
            return None
        path = self._path(samples, rate)
        try:
            value = np.load(path)
        except (OSError, ValueError):  # absent, or a torn write from a killed run
            self.misses += 1
            return None
        self.hits += 1
        return value

    def store(self, samples: np.ndarray, rate: int, value: np.ndarray) -> None:
        if self.folder is None:
            return
        path = self._path(samples, rate)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        with open(partial, "wb") as f:
            np.save(f, value)
        os.replace(partial, path)

    def get(self, samples: np.ndarray, rate: int, compute: Callable[[], np.ndarray]
            ) -> np.ndarray:
        value = self.load(samples, rate)
        if value is None:
            value = compute()
            self.store(samples, rate, value)
        return value
