"""Dataset builders on real files: the PASCAL layout, a user's audio folder, and every kind of
bad input a researcher's folder holds."""

import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from cnnjax.data import load_recordings
from cnnjax.errors import DataError
from experiments import heartbeat_synthetic

RATE = 4000


def data_config(tmp_path, source_dir, **overrides):
    data = heartbeat_synthetic.get_config().data
    data.name = "audio_folder"
    data.manual_dir = str(source_dir)
    data.data_dir = str(tmp_path / "cache")
    data.update(overrides)
    return data


def tone(seconds=0.5, rate=RATE, freq=50.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path, samples, rate=RATE, subtype="PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, subtype=subtype)


def quiet(_message):
    pass


def test_pascal_builder_yields_the_published_counts(tmp_path, pascal_dir):
    for subset, expected in (("set_b", {"normal": 320, "murmur": 95, "extrastole": 46}),
                             ("set_a", {"artifact": 40, "murmur": 34, "normal": 31,
                                        "extrahls": 19})):
        data = data_config(tmp_path, pascal_dir, name="pascal_heartbeat", subset=subset)
        recordings = load_recordings(data, log=quiet)
        names = recordings.class_names
        assert Counter(names[r["label"]] for r in recordings.records) == expected
        assert recordings.summary["skipped"] == []
    first = next(r for r in load_recordings(data_config(
        tmp_path, pascal_dir, name="pascal_heartbeat", subset="set_b"), log=quiet).records
        if r["file_name"] == "set_b/normal__103_1305031931979_D1.wav")
    assert first["group"] == "103" and first["sample_rate"] == 4000
    original, _ = sf.read(pascal_dir / first["file_name"], dtype="int16")
    np.testing.assert_array_equal(first["audio"], original)  # native rate, samples intact


def test_build_happens_once_and_a_changed_folder_builds_anew(tmp_path):
    write(tmp_path / "src" / "yes" / "a.wav", tone())
    write(tmp_path / "src" / "no" / "b.wav", tone(freq=80))
    messages = []
    data = data_config(tmp_path, tmp_path / "src")
    load_recordings(data, log=messages.append)
    load_recordings(data, log=messages.append)
    assert sum(m.startswith("building") for m in messages) == 1
    write(tmp_path / "src" / "no" / "c.wav", tone(freq=90))
    recordings = load_recordings(data, log=messages.append)
    assert sum(m.startswith("building") for m in messages) == 2
    assert recordings.file_names == ["no/b.wav", "no/c.wav", "yes/a.wav"]
    assert recordings.class_names == ("no", "yes")


def test_every_kind_of_bad_or_unusual_file_is_counted_kept_or_refused(tmp_path):
    src = tmp_path / "src"
    write(src / "ok.wav", tone())
    (src / "empty.wav").write_bytes(b"")
    write(src / "zero_samples.wav", np.zeros(0, np.float32))
    (src / "text.wav").write_text("this is not audio\n")
    good = (src / "ok.wav").read_bytes()
    (src / "corrupt_header.wav").write_bytes(b"RIFF" + b"\xff" * 40 + good[44:])
    (src / "truncated.wav").write_bytes(good[: len(good) // 2])  # header says more than is there
    stereo = np.stack([tone(), np.zeros_like(tone())], axis=1)
    write(src / "stereo.wav", stereo)
    write(src / "u8.wav", tone(), subtype="PCM_U8")
    write(src / "pcm24.wav", tone(), subtype="PCM_24")
    write(src / "float.wav", tone(), subtype="FLOAT")
    write(src / "odd_rate.wav", tone(rate=7919), rate=7919)
    nan = tone()
    nan[10] = np.nan
    write(src / "nan.wav", nan, subtype="FLOAT")
    inf = tone()
    inf[5] = np.inf
    write(src / "inf.wav", inf, subtype="FLOAT")
    write(src / "silent.wav", np.zeros(RATE, np.float32))
    write(src / "long.wav", tone(seconds=180.0))
    rows = ["path,label,group",
            "ok.wav,normal,p1", "empty.wav,normal,p1", "zero_samples.wav,normal,p2",
            "text.wav,murmur,p2", "corrupt_header.wav,murmur,p3", "truncated.wav,murmur,p3",
            "stereo.wav,normal,p4", "u8.wav,murmur,p4", "pcm24.wav,normal,p5",
            "float.wav,murmur,p5", "odd_rate.wav,normal,p6", "nan.wav,murmur,p6",
            "inf.wav,normal,p7", "silent.wav,murmur,p7", "long.wav,normal,p8",
            "missing.wav,normal,p8", "ok.wav,normal,p1", "stereo.wav,gallop,p9",
            "u8.wav,,p9"]
    (src / "labels.csv").write_text("\n".join(rows) + "\n")
    data = data_config(tmp_path, src, csv="labels.csv", classes=("murmur", "normal"),
                       max_seconds=60.0)
    recordings = load_recordings(data, log=quiet)
    kept = {r["file_name"]: r for r in recordings.records}
    assert sorted(kept) == sorted(["ok.wav", "truncated.wav", "stereo.wav", "u8.wav",
                                   "pcm24.wav", "float.wav", "odd_rate.wav", "silent.wav",
                                   "long.wav"])
    skipped = Counter(reason for reason, _ in recordings.summary["skipped"])
    assert skipped == {"unreadable": 6, "missing": 1, "duplicate": 1, "unknown label": 1,
                       "unlabelled": 1}
    reference = np.round(tone() * 32768)
    np.testing.assert_allclose(kept["stereo.wav"]["audio"], np.round(reference / 2), atol=1)
    np.testing.assert_allclose(kept["pcm24.wav"]["audio"], reference, atol=1)
    np.testing.assert_allclose(kept["float.wav"]["audio"], reference, atol=1)
    np.testing.assert_allclose(kept["u8.wav"]["audio"], reference, atol=300)  # 8-bit steps
    assert kept["odd_rate.wav"]["sample_rate"] == 7919
    assert kept["long.wav"]["audio"].size == 60 * RATE
    assert kept["ok.wav"]["group"] == "p1"
    flagged = dict((name, what) for what, name in recordings.summary["flagged"])
    assert flagged == {"silent.wav": "silent", "long.wav": "cut to 60 s",
                       "truncated.wav": "shorter than its header says"}
    text = recordings.summary["text"]
    assert text.startswith("9 examples; skipped 10 (") and "1 missing: missing.wav" in text
    on_disk = list((tmp_path / "cache" / "tfds").rglob("build_summary.json"))
    assert json.loads(on_disk[0].read_text())["text"] == text


@pytest.mark.parametrize("escaping", ["../outside.wav", "/etc/passwd", "sub/../../x.wav"])
def test_csv_paths_outside_the_data_root_are_refused(tmp_path, escaping):
    src = tmp_path / "src"
    write(src / "ok.wav", tone())
    write(tmp_path / "outside.wav", tone())
    (src / "labels.csv").write_text(f"path,label\nok.wav,a\n{escaping},a\n")
    with pytest.raises(DataError, match="outside .* refused"):
        load_recordings(data_config(tmp_path, src, csv="labels.csv"), log=quiet)


def test_a_dataset_with_nothing_usable_is_an_error(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no usable labelled recordings"):
        load_recordings(data_config(tmp_path, tmp_path / "src"), log=quiet)
    (tmp_path / "src" / "a" / "x.wav").write_text("not audio")
    with pytest.raises(DataError, match="no readable recordings"):
        load_recordings(data_config(tmp_path, tmp_path / "src"), log=quiet)


def test_missing_manual_dir_says_what_to_set(tmp_path):
    with pytest.raises(DataError, match="config.data.manual_dir is empty"):
        load_recordings(data_config(tmp_path, "", name="pascal_heartbeat"), log=quiet)
