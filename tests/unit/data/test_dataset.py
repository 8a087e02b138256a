"""Discovery, validation, patient-grouped split, subsetting, fingerprint, cache and the data-check command."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

import pipeline.data.preprocess
from pipeline.data.dataset import (
    DatasetError,
    assign_splits,
    class_weights,
    fingerprint,
    limit_per_class,
    load_dataset,
    patient_id,
    scan,
)
from tests.helpers import REPO


def _counts(manifest, column="source_split"):
    return manifest.groupby([column, "class_name"]).size().to_dict()


# ---------------------------------------------------------------- discovery


def test_scan_finds_every_image_with_labels_and_patients(synthetic_dataset, spec):
    manifest, skipped = scan(synthetic_dataset)
    assert skipped == []
    assert _counts(manifest) == {("train", "NORMAL"): spec.train, ("train", "PNEUMONIA"): spec.train,
                                 ("test", "NORMAL"): spec.test, ("test", "PNEUMONIA"): spec.test}
    assert (manifest["label"] == (manifest["class_name"] == "PNEUMONIA")).all()
    assert {Path(p).suffix for p in manifest["path"]} == {".jpeg", ".png"}
    assert manifest["sha"].str.len().eq(24).all() and manifest["sha"].is_unique


def test_scan_ignores_case_of_folder_names_and_accepts_jpg(synthetic_dataset, spec):
    (synthetic_dataset / "train").rename(synthetic_dataset / "Train")
    (synthetic_dataset / "Train" / "NORMAL").rename(synthetic_dataset / "Train" / "normal")
    (synthetic_dataset / "test" / "PNEUMONIA").rename(synthetic_dataset / "test" / "Pneumonia")
    first = sorted((synthetic_dataset / "Train" / "normal").glob("*.jpeg"))[0]
    renamed = first.rename(first.with_suffix(".JPG"))
    manifest, skipped = scan(synthetic_dataset)
    assert skipped == []
    assert len(manifest) == 2 * (spec.train + spec.test)
    row = manifest[manifest["path"] == str(renamed)]
    assert len(row) == 1 and row.iloc[0]["class_name"] == "NORMAL" and row.iloc[0]["source_split"] == "train"


def _odd_entries(dataset: Path) -> dict[str, Path]:
    """Entries a copied or half-synced data set can hold that are not image files; {kind: path}."""
    normal, pneumonia = dataset / "train" / "NORMAL", dataset / "train" / "PNEUMONIA"
    entries = {"hidden": normal / ".DS_Store", "folder": normal / "nested", "folder_like_image": pneumonia / "x.jpeg",
               "loop": normal / "loop.jpeg", "dangling": pneumonia / "gone.jpeg", "fifo": normal / "pipe.png"}
    entries["hidden"].write_bytes(b"junk")
    entries["folder"].mkdir()
    entries["folder_like_image"].mkdir()
    entries["loop"].symlink_to(entries["loop"].name)  # points at itself
    entries["dangling"].symlink_to(dataset / "nowhere.jpeg")
    os.mkfifo(entries["fifo"])  # opening it would block: it must be skipped before anything reads it
    return entries


REASONS = {"hidden": "hidden entry (name starts with '.')",
           "folder": "a folder, not an image file (images must sit directly in the class folder)",
           "folder_like_image": "a folder, not an image file (images must sit directly in the class folder)",
           "loop": "symbolic link loop (the link points back to itself)",
           "fifo": "not a regular file (device, pipe or socket)"}


def test_every_entry_that_is_not_an_image_file_is_skipped_with_its_reason(synthetic_dataset, spec):
    entries = _odd_entries(synthetic_dataset)
    linked = synthetic_dataset / "test" / "NORMAL" / "IM-9999-0001.jpeg"  # a link to a good image is an image
    linked.symlink_to(sorted((synthetic_dataset / "train" / "NORMAL").glob("*.jpeg"))[0])
    manifest, skipped = scan(synthetic_dataset)
    reasons = {item["path"]: item["reason"] for item in skipped}
    assert set(reasons) == {str(path) for path in entries.values()}
    for kind, reason in REASONS.items():
        assert reasons[str(entries[kind])] == reason, kind
    assert reasons[str(entries["dangling"])] == (
        f"dangling symbolic link (its target {synthetic_dataset / 'nowhere.jpeg'} does not exist)")
    assert str(linked) in set(manifest["path"]) and len(manifest) == 2 * (spec.train + spec.test) + 1


def test_unlistable_class_folder_is_an_error_naming_it(synthetic_dataset, monkeypatch):
    # Tests run as root here, where chmod 000 does not block reading: the OS error is made directly.
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self.name == "PNEUMONIA" and self.parent.name == "test":
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(DatasetError, match=r"test/PNEUMONIA cannot be listed \(Permission denied\)"):
        scan(synthetic_dataset)


def test_bad_files_are_skipped_by_name_and_odd_pngs_load(bad_dataset, data_cfg, pre_cfg, spec):
    ds = load_dataset(data_cfg(), pre_cfg, progress=False)
    skipped = {item["path"]: item["reason"] for item in ds.skipped}
    for kind in ("corrupt", "truncated", "zero_byte", "text"):
        assert str(bad_dataset[kind]) in skipped, kind
    assert len(skipped) == 4
    assert "0 bytes" in skipped[str(bad_dataset["zero_byte"])]
    assert "suffix" in skipped[str(bad_dataset["text"])]
    assert "header" in skipped[str(bad_dataset["corrupt"])]
    assert "decoded" in skipped[str(bad_dataset["truncated"])]
    paths = ds.manifest["path"].tolist()
    assert not set(skipped) & set(paths)
    for kind in ("rgba", "png16"):
        image = ds.images[paths.index(str(bad_dataset[kind]))]
        assert image.shape == (pre_cfg.image_size,) * 2 and image.std() > 5, kind
    assert len(ds.manifest) == len(ds.images) == 2 * (spec.train + spec.test) + 2


# ---------------------------------------------------------------- clear errors


def test_missing_data_dir(tmp_path):
    with pytest.raises(DatasetError, match="nowhere"):
        scan(tmp_path / "nowhere")


def test_missing_split_folder(synthetic_dataset):
    shutil.rmtree(synthetic_dataset / "test")
    with pytest.raises(DatasetError, match="'test/'") as err:
        scan(synthetic_dataset)
    assert str(synthetic_dataset) in str(err.value)


def test_missing_class_folder(synthetic_dataset):
    shutil.rmtree(synthetic_dataset / "test" / "PNEUMONIA")
    with pytest.raises(DatasetError, match="PNEUMONIA") as err:
        scan(synthetic_dataset)
    assert str(synthetic_dataset / "test") in str(err.value)


def test_empty_split(synthetic_dataset):
    for cls in ("NORMAL", "PNEUMONIA"):
        for path in (synthetic_dataset / "test" / cls).iterdir():
            path.unlink()
    with pytest.raises(DatasetError, match="'test'.*no usable images") as err:
        scan(synthetic_dataset)
    assert str(synthetic_dataset) in str(err.value)


def test_one_class_dataset(synthetic_dataset):
    for path in (synthetic_dataset / "train" / "NORMAL").iterdir():
        path.unlink()
    with pytest.raises(DatasetError, match="'train'.*only one class.*NORMAL"):
        scan(synthetic_dataset)


def test_one_class_after_decode_failures(synthetic_dataset, data_cfg, pre_cfg):
    """Files that pass the header check but cannot be decoded must not leave a split with one class."""
    for path in (synthetic_dataset / "test" / "NORMAL").iterdir():
        path.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    with pytest.raises(DatasetError, match="'test'.*only one class.*NORMAL"):
        load_dataset(data_cfg(), pre_cfg, progress=False)


def test_too_few_patients_to_carve_val(tmp_path, data_cfg):
    from pipeline.data.synthetic import make_synthetic_dataset
    tiny = make_synthetic_dataset(tmp_path / "tiny", per_class_train=2, per_class_test=1, size=32)
    with pytest.raises(DatasetError, match="patients"):
        assign_splits(scan(tiny)[0], data_cfg(data_dir=tiny))


# ---------------------------------------------------------------- patient-grouped split


@pytest.mark.parametrize("name, expected", [
    ("person123_bacteria_45.jpeg", "PERSON123"),
    ("person123_virus_46.jpeg", "PERSON123"),
    ("PERSON7_bacteria_1.png", "PERSON7"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("NORMAL2-IM-0427-0001.jpeg", "NORMAL2-IM-0427"),
    ("scan_2024.png", "SCAN_2024"),
])
def test_patient_id(name, expected):
    assert patient_id(name) == expected


def test_carved_val_keeps_patients_apart_and_has_both_classes(synthetic_dataset, data_cfg, spec):
    manifest = assign_splits(scan(synthetic_dataset)[0], data_cfg())
    train = set(manifest.loc[manifest["split"] == "train", "patient_id"])
    val = manifest[manifest["split"] == "val"]
    assert not train & set(val["patient_id"])
    assert set(val["class_name"]) == {"NORMAL", "PNEUMONIA"}
    assert 0.05 < len(val) / (2 * spec.train) < 0.35
    assert (manifest.loc[manifest["source_split"] == "test", "split"] == "test").all()
    assert manifest.loc[manifest["split"] == "val", "source_split"].eq("train").all()


def test_carved_val_is_deterministic_for_a_seed(synthetic_dataset, data_cfg):
    manifest = scan(synthetic_dataset)[0]

    def val_paths(seed):
        out = assign_splits(manifest, data_cfg(seed=seed))
        return set(out.loc[out["split"] == "val", "path"])

    assert val_paths(0) == val_paths(0)
    assert val_paths(0) != val_paths(1)


def test_own_val_folder_is_used_when_big_enough(synthetic_dataset, data_cfg):
    """Moves three whole NORMAL patients and one PNEUMONIA patient (both images) into val/."""
    val = synthetic_dataset / "val"
    moved = []
    for cls, count in (("NORMAL", 3), ("PNEUMONIA", 2)):
        (val / cls).mkdir(parents=True)
        for path in sorted((synthetic_dataset / "train" / cls).iterdir())[:count]:
            moved.append(str(shutil.move(str(path), val / cls / path.name)))
    manifest = scan(synthetic_dataset)[0]
    used = assign_splits(manifest, data_cfg(min_val_images=5))
    assert set(used.loc[used["split"] == "val", "path"]) == set(moved)
    carved = assign_splits(manifest, data_cfg(min_val_images=6))  # too small: merged into train, then carved
    assert set(carved.loc[carved["split"] == "val", "path"]) != set(moved)
    assert not set(carved.loc[carved["split"] == "train", "patient_id"]) & set(
        carved.loc[carved["split"] == "val", "patient_id"])


# ---------------------------------------------------------------- subset, fingerprint, weights


def test_limit_per_class(synthetic_dataset, data_cfg):
    manifest = assign_splits(scan(synthetic_dataset)[0], data_cfg())
    small = limit_per_class(manifest, 3, seed=0)
    sizes = small.groupby(["split", "class_name"]).size()
    assert (sizes <= 3).all() and len(sizes) == 6
    assert sizes[("train", "NORMAL")] == 3
    assert set(small["path"]) <= set(manifest["path"])
    assert small.equals(limit_per_class(manifest, 3, seed=0))
    assert not set(small["path"]) == set(limit_per_class(manifest, 3, seed=1)["path"])
    assert limit_per_class(manifest, None, seed=0) is manifest


def test_max_per_class_through_load_dataset(data_cfg, pre_cfg):
    ds = load_dataset(data_cfg(max_per_class=2), pre_cfg, progress=False)
    assert ds.counts() == {s: {"NORMAL": 2, "PNEUMONIA": 2} for s in ("test", "train", "val")}
    assert len(ds.images) == 12


def test_fingerprint_is_stable_and_follows_content(synthetic_dataset, data_cfg, tmp_path):
    cfg = data_cfg()
    first = fingerprint(assign_splits(scan(synthetic_dataset)[0], cfg))
    assert first == fingerprint(assign_splits(scan(synthetic_dataset)[0], cfg))
    assert len(first) == 16
    moved = Path(shutil.copytree(synthetic_dataset, tmp_path / "elsewhere"))  # location is not identity
    assert first == fingerprint(assign_splits(scan(moved)[0], data_cfg(data_dir=moved)))
    assert first != fingerprint(assign_splits(scan(synthetic_dataset)[0], data_cfg(seed=1)))  # other split
    target = sorted((synthetic_dataset / "train" / "NORMAL").glob("*.png"))[0]
    image = cv2.imread(str(target), cv2.IMREAD_GRAYSCALE)
    image[0, 0] ^= 0xFF
    assert cv2.imwrite(str(target), image)
    assert first != fingerprint(assign_splits(scan(synthetic_dataset)[0], cfg))


def test_class_weights_balanced():
    labels = np.array([0] * 10 + [1] * 30)
    weights = class_weights(labels)
    assert set(weights) == {0, 1} and weights[0] > weights[1]
    expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    assert weights == pytest.approx({0: expected[0], 1: expected[1]})
    assert weights[0] == pytest.approx(2.0) and weights[1] == pytest.approx(40 / 60)
    assert class_weights(np.array([0, 1, 0, 1])) == {0: 1.0, 1: 1.0}


# ---------------------------------------------------------------- load_dataset and its cache


def test_load_dataset_shapes_and_split(data_cfg, pre_cfg, spec):
    ds = load_dataset(data_cfg(), pre_cfg, progress=False)
    assert ds.images.shape == (len(ds.manifest), 32, 32) and ds.images.dtype == np.uint8
    counts = ds.counts()
    assert set(counts) == {"train", "val", "test"}
    assert counts["test"] == {"NORMAL": spec.test, "PNEUMONIA": spec.test}
    assert sum(counts["train"].values()) + sum(counts["val"].values()) == 2 * spec.train
    x, y = ds.split("val")
    assert len(x) == len(y) == sum(counts["val"].values()) and set(y) == {0, 1}
    assert ds.fingerprint == fingerprint(ds.manifest)


def test_second_load_comes_from_the_cache(data_cfg, pre_cfg, monkeypatch, tmp_path):
    cfg = data_cfg()
    first = load_dataset(cfg, pre_cfg, progress=False)
    assert list((tmp_path / "cache" / "images").glob("*.npy"))

    def no_decoding(path):
        raise AssertionError(f"decoded {path} again instead of using the cache")

    monkeypatch.setattr(pipeline.data.preprocess, "read_image", no_decoding)
    second = load_dataset(cfg, pre_cfg, progress=False)
    np.testing.assert_array_equal(first.images, second.images)
    assert first.manifest.equals(second.manifest) and first.fingerprint == second.fingerprint


def test_other_preprocessing_is_another_cache_entry(data_cfg, pre_cfg, tmp_path):
    from pipeline.config import PreprocessConfig
    cfg = data_cfg()
    small = load_dataset(cfg, pre_cfg, progress=False)
    other = load_dataset(cfg, PreprocessConfig(image_size=40, clahe_clip_limit=3.0), progress=False)
    assert other.images.shape[1:] == (40, 40) and small.images.shape[1:] == (32, 32)
    assert len(list((tmp_path / "cache" / "images").glob("*.npy"))) == 2


# ---------------------------------------------------------------- `python -m pipeline data-check`


def _data_check(*args, cwd=REPO):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "pipeline", "data-check", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_data_check_json(bad_dataset, tmp_path, spec):
    root = bad_dataset["corrupt"].parents[2]
    result = _data_check("--data-dir", str(root), "--json", "--cache-dir", str(tmp_path / "cache"),
                         "--image-size", "32", "--seed", "0")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"splits", "skipped", "not_used", "fingerprint"} and report["not_used"] == []
    assert set(report["splits"]) == {"train", "val", "test"}
    for counts in report["splits"].values():
        assert set(counts) == {"NORMAL", "PNEUMONIA"} and all(isinstance(n, int) and n > 0 for n in counts.values())
    assert report["splits"]["test"] == {"NORMAL": spec.test, "PNEUMONIA": spec.test}
    total = sum(n for counts in report["splits"].values() for n in counts.values())
    assert total == 2 * (spec.train + spec.test) + 2  # + the RGBA and 16-bit PNGs
    assert {item["path"] for item in report["skipped"]} == {
        str(bad_dataset[k]) for k in ("corrupt", "truncated", "zero_byte", "text")}
    assert all(item["reason"] for item in report["skipped"])
    assert isinstance(report["fingerprint"], str) and len(report["fingerprint"]) == 16


@pytest.mark.slow
def test_data_check_lists_links_folders_and_pipes_it_skips(synthetic_dataset, tmp_path):
    entries = _odd_entries(synthetic_dataset)
    result = _data_check("--data-dir", str(synthetic_dataset), "--cache-dir", str(tmp_path / "cache"),
                         "--image-size", "32", "--seed", "0")
    assert result.returncode == 0, result.stderr
    assert f"skipped {len(entries)} file(s):" in result.stdout
    for kind, reason in REASONS.items():
        assert f"    {entries[kind]}: {reason}" in result.stdout.splitlines(), kind


@pytest.mark.slow
def test_data_check_missing_dataset_exits_2_naming_the_folder(tmp_path):
    missing = tmp_path / "no_such_chest_xray"
    result = _data_check("--data-dir", str(missing), "--json", "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert result.stdout.strip() == ""
