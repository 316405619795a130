"""The PASCAL "Classifying Heart Sounds" layout: `set_a/`, `set_b/`, `set_a.csv`, `set_b.csv`.

The CSVs' `fname` column does not spell the files on disk as they are named: set_b rows carry
`Btraining_` / `Bunlabelledtest_` prefixes where the files have none, single underscores where
the files have double ones, and set_a rows spell `__` differently. Both sides are reduced to
the same canonical key (lower case, those prefixes removed, underscores collapsed) and every
row must match exactly one file.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from cnnjax.errors import DataError

SUBSETS = ("set_a", "set_b")


@dataclass(frozen=True)
class Recording:
    """One labelled or unlabelled recording of the index."""
    path: Path
    label: str  # '' when the row is unlabelled
    sublabel: str  # 'noisynormal', 'noisymurmur' or ''
    patient: str  # set_b: the first number of the file name; set_a: the file name


def canonical_name(name: str) -> str:
    """The key that a CSV `fname` and the file it names on disk have in common."""
    key = Path(name).name.lower()
    key = re.sub(r"(^|_)b(training|unlabelledtest)", r"\1", key)
    key = re.sub(r"(^|_)a?unlabelledtest", r"\1", key)
    return re.sub(r"_+", "_", key).strip("_")


def patient_id(file_name: str) -> str:
    """set_b names its files `<label>__<patient>_<timestamp>_<letter>.wav`."""
    match = re.search(r"\d+", file_name)
    return match.group(0) if match else Path(file_name).stem


def read_index(root: str | Path, subset: str = "set_b") -> list[Recording]:
    """Every row of `<root>/<subset>.csv`, resolved to its file in `<root>/<subset>/`.

    Raises DataError naming what is missing, or listing every row that does not
    resolve to exactly one file.
    """
    root = Path(root).expanduser()
    if subset not in SUBSETS:
        raise DataError(f"subset {subset!r} is not one of {SUBSETS}.")
    index_path, folder = root / f"{subset}.csv", root / subset
    for needed in (index_path, folder):
        if not needed.exists():
            raise DataError(
                f"{needed} does not exist: the data folder must hold the PASCAL heart-sound "
                f"layout ({', '.join(SUBSETS)} folders and their .csv files).")
    files: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*.wav")):
        files.setdefault(canonical_name(path.name), []).append(path)
    recordings, unresolved = [], []
    with open(index_path, newline="") as f:
        for row in csv.DictReader(f):
            matches = files.get(canonical_name(row["fname"]), [])
            if len(matches) != 1:
                unresolved.append(f"{row['fname']} ({len(matches)} matching files)")
                continue
            path = matches[0]
            recordings.append(Recording(
                path=path, label=(row.get("label") or "").strip(),
                sublabel=(row.get("sublabel") or "").strip(),
                patient=patient_id(path.name) if subset == "set_b" else path.stem))
    if unresolved:
        raise DataError(
            f"{len(unresolved)} rows of {index_path} do not name exactly one file in {folder}: "
            + "; ".join(unresolved[:20]) + (" ..." if len(unresolved) > 20 else ""))
    return recordings
