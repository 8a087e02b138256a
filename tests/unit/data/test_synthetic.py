"""The synthetic generator: Kermany layout and names, determinism, safety of the output folder."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data.dataset import assign_splits, patient_id, scan
from pipeline.data.synthetic import MARKER, main, make_synthetic_dataset
from tests.helpers import REPO


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_counts_and_readme(synthetic_dataset, spec):
    assert sorted(p.name for p in synthetic_dataset.iterdir()) == ["README.txt", "test", "train"]
    for split, n in (("train", spec.train), ("test", spec.test)):
        assert sorted(p.name for p in (synthetic_dataset / split).iterdir()) == ["NORMAL", "PNEUMONIA"]
        for cls in ("NORMAL", "PNEUMONIA"):
            assert len(list((synthetic_dataset / split / cls).iterdir())) == n
    readme = (synthetic_dataset / "README.txt").read_text()
    assert MARKER in readme and "NOT medical images" in readme


def test_file_names_carry_patients_and_formats_are_mixed(synthetic_dataset):
    pneumonia = sorted(p.name for p in (synthetic_dataset / "train" / "PNEUMONIA").iterdir())
    normal = sorted(p.name for p in (synthetic_dataset / "train" / "NORMAL").iterdir())
    assert all(name.startswith("person") and "_bacteria_" in name for name in pneumonia)
    per_patient = {}
    for name in pneumonia:
        per_patient[patient_id(name)] = per_patient.get(patient_id(name), 0) + 1
    assert set(per_patient.values()) == {2}
    assert any(name.startswith("NORMAL2-IM-") for name in normal)
    assert any(name.startswith("IM-") for name in normal)
    assert len({patient_id(n) for n in normal}) == len(normal)
    suffixes = [Path(n).suffix for n in pneumonia + normal]
    assert suffixes.count(".png") > 0 and suffixes.count(".jpeg") > suffixes.count(".png")
    test_patients = {patient_id(p.name) for p in (synthetic_dataset / "test").rglob("*.*")}
    assert not test_patients & {patient_id(n) for n in pneumonia + normal}


def test_images_decode_as_gray_of_the_requested_size(synthetic_dataset, spec):
    for path in sorted((synthetic_dataset / "test").rglob("*.*")):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image is not None and image.shape == (spec.size, spec.size) and image.dtype == np.uint8
        assert image.std() > 10  # not blank


def test_pneumonia_images_have_bright_patches_inside_the_lungs(tmp_path):
    """The class signal is local (blurred bright blobs), not a shift of the whole image's brightness."""
    root = make_synthetic_dataset(tmp_path / "d", per_class_train=30, per_class_test=1, size=96, seed=3)

    def stats(cls):
        images = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).astype(np.float32)
                  for p in sorted((root / "train" / cls).iterdir())]
        peak = np.array([np.percentile(cv2.GaussianBlur(im, (0, 0), 3), 99.5) for im in images])
        return peak, np.array([im.mean() for im in images])

    (peak_n, mean_n), (peak_p, mean_p) = stats("NORMAL"), stats("PNEUMONIA")
    assert np.median(peak_p) > np.median(peak_n) + 10
    assert abs(np.median(mean_p) - np.median(mean_n)) < 15


def test_deterministic_for_a_seed(tmp_path):
    a = _files(make_synthetic_dataset(tmp_path / "a", 4, 2, 48, seed=7))
    b = _files(make_synthetic_dataset(tmp_path / "b", 4, 2, 48, seed=7))
    c = _files(make_synthetic_dataset(tmp_path / "c", 4, 2, 48, seed=8))
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_refuses_a_non_empty_folder_that_is_not_synthetic(tmp_path):
    target = tmp_path / "my_real_data"
    (target / "train").mkdir(parents=True)
    (target / "train" / "precious.jpeg").write_bytes(b"\xff\xd8\xff data")
    with pytest.raises(ValueError, match="my_real_data"):
        make_synthetic_dataset(target, 2, 2, 32)
    assert sorted(p.name for p in target.rglob("*")) == ["precious.jpeg", "train"]  # untouched


def test_a_readme_without_the_marker_is_not_enough(tmp_path):
    target = tmp_path / "other"
    target.mkdir()
    (target / "README.txt").write_text("my own notes\n")
    with pytest.raises(ValueError, match="other"):
        make_synthetic_dataset(target, 2, 2, 32)


def test_regenerates_idempotently_without_stale_files(tmp_path):
    root = tmp_path / "syn"
    first = _files(make_synthetic_dataset(root, 6, 3, 48))
    assert _files(make_synthetic_dataset(root, 6, 3, 48)) == first
    make_synthetic_dataset(root, 2, 1, 48)
    assert len(list((root / "train" / "NORMAL").iterdir())) == 2
    assert len(list((root / "test" / "PNEUMONIA").iterdir())) == 1


def test_an_existing_empty_folder_is_used(tmp_path):
    (tmp_path / "empty").mkdir()
    assert (make_synthetic_dataset(tmp_path / "empty", 2, 2, 32) / "README.txt").is_file()


@pytest.mark.parametrize("kwargs", [{"per_class_train": 0}, {"per_class_test": 0}, {"size": 8}])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_synthetic_dataset(tmp_path / "x", **kwargs)


def test_the_pipeline_reads_it_and_carves_a_patient_grouped_val(synthetic_dataset, data_cfg, spec):
    manifest, skipped = scan(synthetic_dataset)
    assert skipped == [] and len(manifest) == 2 * (spec.train + spec.test)
    split = assign_splits(manifest, data_cfg())
    assert set(split["split"]) == {"train", "val", "test"}


def test_main_writes_and_refuses(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--per-class-train", "3", "--per-class-test", "2", "--size", "32",
                 "--seed", "1"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert len(list((out / "train" / "PNEUMONIA").iterdir())) == 3
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x.txt").write_text("x")
    assert main(["--out", str(tmp_path / "taken")]) == 2
    assert "taken" in capsys.readouterr().err


def test_runs_as_a_module(tmp_path):
    out = tmp_path / "module"
    result = subprocess.run([sys.executable, "-m", "pipeline.data.synthetic", "--out", str(out), "--per-class-train", "2",
                             "--per-class-test", "1", "--size", "32"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert (out / "README.txt").is_file() and len(list(out.rglob("*.*"))) == 7
