"""Finding weight files: a plain path, or 'torchvision:<arch>' looked up in known folders,
downloaded (and checked against the SHA-256 prefix in its name) only when absent.

Search order for 'torchvision:resnet34': `$CNNJAX_WEIGHTS_DIR`, `~/.cache/cnnjax`
(`$XDG_CACHE_HOME/cnnjax`), torch's own cache `~/.cache/torch/hub/checkpoints`
(`$TORCH_HOME/hub/checkpoints`); in each, the converted file
(`resnet34-b627a593.cnnjax.safetensors`, needs no torch) before the official
`resnet34-b627a593.pth`. Downloads go to the first folder, from `$CNNJAX_WEIGHTS_URL`
(default torchvision's server); `CNNJAX_OFFLINE=1` forbids them.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from cnnjax.logs import logger
from cnnjax.pretrained.errors import WeightsError

OFFICIAL_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "inception_v3": "inception_v3_google-0cc3c7bd.pth",
}
DEFAULT_BASE_URL = "https://download.pytorch.org/models/"
WEIGHTS_DIR_ENV = "CNNJAX_WEIGHTS_DIR"
BASE_URL_ENV = "CNNJAX_WEIGHTS_URL"
OFFLINE_ENV = "CNNJAX_OFFLINE"
SCHEME = "torchvision:"
DOWNLOAD_TIMEOUT_S = 30.0


def converted_file_name(arch: str) -> str:
    """The name `convert` output gets in a weights folder: resnet34-b627a593.cnnjax.safetensors."""
    return OFFICIAL_FILES[arch].removesuffix(".pth") + ".cnnjax.safetensors"


def search_dirs() -> list[Path]:
    """The folders searched for 'torchvision:<arch>', first to last (downloads go to the first)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    torch_home = Path(os.environ.get("TORCH_HOME") or cache / "torch").expanduser()
    dirs = [cache / "cnnjax", torch_home / "hub" / "checkpoints"]
    if os.environ.get(WEIGHTS_DIR_ENV):
        dirs.insert(0, Path(os.environ[WEIGHTS_DIR_ENV]).expanduser())
    return dirs


def resolve_weights(spec: str | os.PathLike, *, download: bool | None = None,
                    base_url: str | None = None) -> Path:
    """The weights file for `spec`: a path (returned if it exists) or 'torchvision:<arch>'.

    `download=None` downloads unless `$CNNJAX_OFFLINE` is set; `base_url` defaults to
    `$CNNJAX_WEIGHTS_URL`, else torchvision's server. Raises a `WeightsError` that says which
    file to put where when the file is neither found nor downloadable.
    """
    if not str(spec).startswith(SCHEME):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise WeightsError(f"No weights file at {path}; pass an existing .pth, .pt, "
                               f".safetensors or .npz file, or one of "
                               f"{', '.join(SCHEME + arch for arch in OFFICIAL_FILES)}.")
        return path
    arch = str(spec)[len(SCHEME):]
    if arch not in OFFICIAL_FILES:
        raise WeightsError(f"{spec!r} names no torchvision weights cnnjax knows; choose one of "
                           f"{', '.join(SCHEME + name for name in OFFICIAL_FILES)}.")
    dirs = search_dirs()
    for folder in dirs:
        for name in (converted_file_name(arch), OFFICIAL_FILES[arch]):
            if (folder / name).is_file():
                return folder / name

    name = OFFICIAL_FILES[arch]
    url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/") + "/" + name
    if download is None:
        download = not os.environ.get(OFFLINE_ENV)
    reason = f"downloads are off (${OFFLINE_ENV} is set)"
    if download:
        try:
            return download_file(url, dirs[0] / name)
        except WeightsError:
            raise
        except (OSError, http.client.HTTPException, ValueError) as error:
            reason = f"could not be downloaded ({_reason(error)})"
    raise WeightsError(
        f"torchvision's {arch} weights are not on this machine and {reason}; fetch {url} "
        f"where there is network and put {name} into {dirs[0]} (or set ${WEIGHTS_DIR_ENV} to "
        f"the folder that holds it, or pass its path).")


def download_file(url: str, dest: Path, sha256_prefix: str | None = None) -> Path:
    """Downloads `url` to `dest` (atomically, with progress) and checks its SHA-256 prefix,
    by default the hex digits after the last '-' in the file name (torchvision's scheme)."""
    if sha256_prefix is None:
        match = re.search(r"-([0-9a-f]{8,64})\.", dest.name)
        sha256_prefix = match.group(1) if match else ""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    logger.info(f"downloading {url} to {dest}")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, \
                open(partial, "wb") as out, \
                tqdm(total=int(response.headers.get("Content-Length") or 0) or None, unit="B",
                     unit_scale=True, desc=dest.name, file=sys.stderr, disable=None) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if not digest.hexdigest().startswith(sha256_prefix):
        partial.unlink(missing_ok=True)
        raise WeightsError(f"The file downloaded from {url} has SHA-256 "
                           f"{digest.hexdigest()[:16]}..., not {sha256_prefix}... as expected, "
                           f"so it was discarded; download it again or check the URL.")
    partial.replace(dest)
    return dest


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        error = error.reason if isinstance(error.reason, BaseException) else error
    return str(error) or type(error).__name__
