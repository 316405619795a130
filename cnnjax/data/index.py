"""What a dataset build reads: the list of recordings with labels and groups, before any
audio is opened. Problems found here are either fatal (the layout is wrong, a path escapes the
data root) or counted as skipped with a reason; nothing is dropped silently."""

from __future__ import annotations

import csv
import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from cnnjax.data.pascal import read_index
from cnnjax.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".aifc")
PASCAL_CLASSES = {"set_a": ("artifact", "extrahls", "murmur", "normal"),
                  "set_b": ("extrastole", "murmur", "normal")}


@dataclass(frozen=True)
class Entry:
    """One recording to build: `file_name` is its path relative to the data root; `target`
    its numeric regression target (NaN: none)."""
    path: Path
    file_name: str
    label: str
    group: str
    sublabel: str = ""
    target: float = math.nan


@dataclass
class Index:
    """The recordings of a dataset, its class names and what was skipped, by reason."""
    entries: list[Entry]
    class_names: tuple[str, ...]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (reason, file name)
    flagged: list[tuple[str, str]] = field(default_factory=list)  # kept, but worth knowing

    def skip(self, reason: str, name: str) -> None:
        self.skipped.append((reason, name))

    def flag(self, what: str, name: str) -> None:
        self.flagged.append((what, name))

    def summary(self, num_examples: int) -> str:
        """'461 examples; skipped 2 (1 unreadable: set_b/x.wav; 1 missing: set_b/y.wav)'."""
        text = f"{num_examples} examples; skipped {len(self.skipped)}"
        if self.skipped:
            text += f" ({_grouped(self.skipped)})"
        if self.flagged:
            text += f"; kept but flagged: {_grouped(self.flagged)}"
        return text

    def fingerprint(self) -> str:
        """Changes when any recording's path, size, modification time, label or target
        changes (recordings without a target hash as they did before targets existed)."""
        digest = hashlib.sha256()
        for e in self.entries:
            stat = e.path.stat()
            target = "" if math.isnan(e.target) else f"|{e.target!r}"
            digest.update(f"{e.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{e.label}|"
                          f"{e.group}|{e.sublabel}{target}\n".encode())
        digest.update(repr((self.class_names, sorted(self.skipped))).encode())
        return digest.hexdigest()[:12]


def _grouped(items: list[tuple[str, str]]) -> str:
    by_reason: dict[str, list[str]] = {}
    for reason, name in items:
        by_reason.setdefault(reason, []).append(name)
    return "; ".join(f"{len(names)} {reason}: {', '.join(names[:5])}"
                     + (" ..." if len(names) > 5 else "") for reason, names in sorted(by_reason.items()))


def pascal_index(root: str | Path, subset: str, labelled: bool = True) -> Index:
    """The labelled recordings of PASCAL `subset`, or with `labelled=False` its unlabelled
    ones (the challenge's test recordings, label ''); every CSV row must resolve."""
    root = Path(root).expanduser()
    classes = PASCAL_CLASSES[subset]
    index = Index([], classes)
    seen: set[Path] = set()
    for recording in read_index(root, subset):
        name = recording.path.relative_to(root).as_posix()
        if bool(recording.label) != labelled:
            continue  # the other split's recording
        if labelled and recording.label not in classes:
            index.skip("unknown label", f"{name} ({recording.label})")
        elif recording.path in seen:
            index.skip("duplicate", name)
        else:
            seen.add(recording.path)
            index.entries.append(Entry(recording.path, name, recording.label, recording.patient,
                                       recording.sublabel))
    return index


def inside_root(root: Path, relative: str) -> Path | None:
    """`root / relative` resolved, if that stays inside `root`, else None: absolute paths,
    `..` and symbolic links that lead out of the folder."""
    candidate = (root / relative).resolve()
    return candidate if not Path(relative).is_absolute() and candidate.is_relative_to(
        root.resolve()) else None


def _read_target(cell: str | None) -> float | None:
    """A target cell as a finite float, or None when it is not one."""
    try:
        value = float((cell or "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


Row = tuple[str, str, str, float]  # (path relative to the root, label, group, target)


def _csv_rows(root: Path, csv_path: Path) -> list[Row]:
    """The rows of a UTF-8 CSV (a byte-order mark and CRLF line ends are fine). A missing
    column, a target that is not a number or a path leaving `root` stops the build."""
    rows: list[Row] = []
    bad_targets: list[str] = []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not {"path", "label"} <= set(reader.fieldnames or ()):
                raise DataError(f"{csv_path} must have the columns path,label (and optionally "
                                f"group and target); it has {reader.fieldnames}.")
            has_target = "target" in (reader.fieldnames or ())
            for row in reader:
                target = _read_target(row["target"]) if has_target else math.nan
                if target is None:
                    bad_targets.append(f"{reader.line_num} ({row['target']!r})")
                    continue
                rows.append((row["path"].strip(), (row["label"] or "").strip(),
                             (row.get("group") or "").strip(), target))
    except UnicodeDecodeError as error:
        raise DataError(f"{csv_path} is not UTF-8 text (byte {error.start} is "
                        f"{error.object[error.start:error.start + 1]!r}); save it as UTF-8."
                        ) from None
    if bad_targets:
        many = len(bad_targets) > 1
        listed = ", ".join(bad_targets[:10]) + (" ..." if len(bad_targets) > 10 else "")
        raise DataError(f"{csv_path}: the target column must hold a number in every row; "
                        f"{'lines' if many else 'line'} {listed} {'do' if many else 'does'} "
                        f"not.")
    escaping = [p for p, _, _, _ in rows if inside_root(root, p) is None]
    if escaping:
        raise DataError(f"{len(escaping)} paths in {csv_path} point outside {root} and are "
                        f"refused: {', '.join(escaping[:10])}; list only files inside it, by "
                        f"their path relative to it.")
    return rows


def class_folder_files(root: Path, suffixes: Sequence[str], kind: str
                       ) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """The files with one of `suffixes` in `root`'s class sub-folders (nested folders belong
    to their class), as (path, class); and what is skipped by name: other files in class
    folders ("not {kind} file name"), links that lead out of `root`, and files with one of
    `suffixes` lying beside the folders."""
    skipped = [("outside a class folder", path.name) for path in sorted(root.iterdir())
               if path.is_file() and path.suffix.lower() in suffixes]
    found: list[tuple[Path, str]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(p for p in folder.rglob("*") if not p.is_dir()):
            relative = path.relative_to(root).as_posix()
            if path.suffix.lower() not in suffixes:
                skipped.append((f"not {kind} file name", relative))
            elif inside_root(root, relative) is None:
                skipped.append(("link leaving the data folder", relative))
            else:
                found.append((path, folder.name))
    return found, skipped


def _folder_rows(root: Path) -> tuple[list[Row], list[tuple[str, str]]]:
    """The recordings in `root`'s class sub-folders, and what is skipped by name."""
    files, skipped = class_folder_files(root, AUDIO_SUFFIXES, "an audio")
    return [(path.relative_to(root).as_posix(), label, "", math.nan)
            for path, label in files], skipped


def audio_folder_index(root: str | Path, csv_name: str = "",
                       classes: Sequence[str] = ()) -> Index:
    """A user's recordings: one sub-folder per class, or a CSV (`path,label[,group][,target]`,
    paths relative to `root`). `classes` fixes the class list (others are skipped as unknown);
    empty means every label found, sorted. Without a `group` column each recording is its
    own group. A `target` column holds a number per row (a regression target, such as beats
    per minute); a cell that is not a finite number stops the build, naming its rows.
    Unlabelled rows, unknown labels, duplicates and missing files are skipped and counted,
    as are (with class folders) files without an audio suffix, links leading out of `root`
    and recordings beside the folders."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of recordings.")
    skipped: list[tuple[str, str]] = []
    if csv_name:
        csv_path = root / csv_name
        if not csv_path.is_file():
            raise DataError(f"{csv_path} does not exist; config.data.csv names a CSV inside "
                            f"config.data.manual_dir.")
        rows = _csv_rows(root, csv_path)
    else:
        rows, skipped = _folder_rows(root)
    labels_found = sorted({label for _, label, _, _ in rows if label})
    index = Index([], tuple(classes) if classes else tuple(labels_found), skipped)
    seen: set[Path] = set()
    for relative, label, group, target in rows:
        path = (root / relative).resolve()
        if not label:
            index.skip("unlabelled", relative)
        elif label not in index.class_names:
            index.skip("unknown label", f"{relative} ({label})")
        elif path in seen:
            index.skip("duplicate", relative)
        elif not path.is_file():
            index.skip("missing", relative)
        else:
            seen.add(path)
            index.entries.append(Entry(path, relative, label, group or relative,
                                       target=target))
    if not index.entries:
        counts = Counter(reason for reason, _ in index.skipped)
        raise DataError(f"{root} holds no usable labelled recordings (found {len(rows)} "
                        f"candidates; skipped {dict(counts)}); expected one sub-folder per "
                        f"class or a CSV with path,label columns.")
    return index
