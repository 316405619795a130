"""Reading and writing weight files without ever unpickling arbitrary Python objects.

`.pth`/`.pt` go through `torch.load(..., weights_only=True)` (torch is optional and imported
only here, only for those files); `.safetensors` through the `safetensors` package's numpy
API; `.npz` through numpy with `allow_pickle=False`. Every failure is a `WeightsError`
naming the file.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from cnnjax.pretrained.errors import WeightsError

TORCH_SUFFIXES = (".pth", ".pt")
SUFFIXES = (*TORCH_SUFFIXES, ".safetensors", ".npz")
# Checkpoints that wrap the state dict, e.g. {'epoch': 3, 'state_dict': {...}}.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")


class Weights(NamedTuple):
    """Named arrays read from a file, plus the file's text metadata (safetensors only)."""
    arrays: dict[str, np.ndarray]
    metadata: dict[str, str]


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array from a numpy array or a torch tensor (duck-typed: torch stays optional)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def read_weights(path: str | os.PathLike) -> Weights:
    """Reads named arrays from a `.pth`, `.pt`, `.safetensors` or `.npz` file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"No weights file at {path}; pass the path of a "
                           f"{'/'.join(SUFFIXES)} file or 'torchvision:<arch>'.")
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return Weights(_read_torch(path), {})
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix == ".npz":
        return Weights(_read_npz(path), {})
    raise WeightsError(f"{path} has an unknown suffix {suffix!r}; weights files must end in "
                       f"one of {', '.join(SUFFIXES)}.")


def write_safetensors(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str]) -> Path:
    """Writes `arrays` (and text `metadata`) to a .safetensors file, atomically."""
    from safetensors.numpy import save_file

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file({name: np.ascontiguousarray(value) for name, value in arrays.items()},
              str(partial), metadata=dict(metadata))
    partial.replace(path)
    return path


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    head = _head(path, 4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise WeightsError(f"{path} is not a PyTorch weights file (it is neither a torch.save "
                           f"zip archive nor a pickle); check that it is the right file.")
    try:
        import torch
    except ImportError:
        raise WeightsError(
            f"Reading {path} needs PyTorch, which is not installed: install the torch extra "
            f"(pip install 'cnnjax[torch]'), or convert the file once where torch is installed "
            f"(python -m cnnjax.pretrained convert {path} {path.with_suffix('.safetensors')}) "
            f"and load the converted file instead.") from None
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses
            warnings.simplefilter("ignore", UserWarning)
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightsError(
            f"{path} holds Python objects other than tensors ({_unpickler_reason(error)}), so "
            f"it was refused unread: only plain state dicts are loaded, never arbitrary "
            f"pickles; re-save just the model's state_dict(), or use a .safetensors file."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise WeightsError(f"{path} could not be read as a PyTorch weights file; it may be "
                           f"truncated or damaged ({_first_line(error)}).") from None
    return {name: to_numpy(value) for name, value in _state_dict(loaded, path).items()}


def _state_dict(loaded: Any, path: Path) -> Mapping[str, Any]:
    """The name -> tensor mapping in `loaded`, unwrapping a checkpoint dict if needed."""
    def is_state_dict(obj: Any) -> bool:
        return (isinstance(obj, Mapping) and len(obj) > 0
                and all(isinstance(k, str) and hasattr(v, "shape") for k, v in obj.items()))

    if is_state_dict(loaded):
        return loaded
    if isinstance(loaded, Mapping):
        for key in _WRAPPER_KEYS:
            if is_state_dict(loaded.get(key)):
                return loaded[key]
    raise WeightsError(f"{path} holds no state dict (a mapping from parameter names to "
                       f"tensors, alone or under one of the keys {list(_WRAPPER_KEYS)}).")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The text metadata of a `.safetensors` file, without reading its arrays; {} for other
    files and for names that are no file (such as `torchvision:resnet34`)."""
    path = Path(path).expanduser()
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return {}
    return _read_safetensors(path, with_arrays=False).metadata


def _read_safetensors(path: Path, with_arrays: bool = True) -> Weights:
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise WeightsError(f"Reading {path} needs the safetensors package: "
                           f"pip install safetensors.") from None
    try:
        with safe_open(str(path), framework="np") as file:
            metadata = dict(file.metadata() or {})
            arrays = ({name: file.get_tensor(name) for name in file.keys()} if with_arrays
                      else {})
    except (SafetensorError, OSError, ValueError, TypeError) as error:
        raise WeightsError(f"{path} could not be read as a .safetensors file; it may be "
                           f"truncated, damaged or another format "
                           f"({_first_line(error)}).") from None
    return Weights(arrays, metadata)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not _head(path, 4).startswith(b"PK\x03\x04"):
        raise WeightsError(f"{path} is not an .npz archive (numpy.savez output); check that it "
                           f"is the right file.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise WeightsError(f"{path} could not be read as an .npz file of plain arrays; it may "
                           f"be truncated, damaged or hold Python objects "
                           f"({_first_line(error)}).") from None


def _head(path: Path, size: int) -> bytes:
    with open(path, "rb") as file:
        return file.read(size)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    first = lines[0].split(". ")[0].rstrip(".") if lines else ""
    return f"{type(error).__name__}: {first}".rstrip(": ")


def _unpickler_reason(error: BaseException) -> str:
    """The useful line of torch's long weights_only message, e.g. 'Trying to load
    unsupported GLOBAL posix.system ...' or 'Unsupported operand 149'."""
    for line in str(error).splitlines()[1:]:
        line = line.split("WeightsUnpickler error:")[-1].strip()
        if line and not line.startswith(("Check the documentation", "Please file an issue")):
            return line.rstrip(".")
    return _first_line(error)
