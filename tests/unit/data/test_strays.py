"""A third class folder (COVID/), images lying directly in train/, a folder beside the splits: none is
read, and the probe found them ignored without a word. data-check lists them, as text and in --json."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from pipeline.data.dataset import CLASSES, SPLITS, scan
from pipeline.data.strays import unused_entries
from tests.helpers import REPO


@pytest.fixture
def strays(synthetic_dataset):
    """The synthetic copy plus a third class with 3 films, one film directly in train/, a folder at the root."""
    train = synthetic_dataset / "train"
    films = sorted((train / "PNEUMONIA").glob("*.jpeg"))
    covid = train / "COVID"
    covid.mkdir()
    for film in films[:3]:
        shutil.copy(film, covid / film.name)
    loose = train / "loose-film.jpeg"
    shutil.copy(films[3], loose)
    extra = synthetic_dataset / "external"
    extra.mkdir()
    shutil.copy(films[4], extra / "x.jpeg")
    return {"covid": covid, "loose": loose, "extra": extra}


def test_entries_no_split_or_class_reads_are_listed_with_their_reason(synthetic_dataset, strays):
    found = {item["path"]: item["reason"] for item in unused_entries(synthetic_dataset, SPLITS, CLASSES)}
    assert set(found) == {str(p) for p in strays.values()}
    assert found[str(strays["covid"])].startswith("a folder that is not a class (3 file(s) not used)")
    assert found[str(strays["loose"])].startswith("lies directly in train/, outside NORMAL/ and PNEUMONIA/")
    assert found[str(strays["extra"])].startswith("a folder that is not a split (1 file(s) not used)")
    manifest, _ = scan(synthetic_dataset)
    assert not manifest["path"].str.contains("COVID|loose-film|external").any()  # and indeed none is read


def test_a_clean_data_set_lists_nothing_and_class_names_match_in_any_case(synthetic_dataset):
    assert unused_entries(synthetic_dataset, SPLITS, CLASSES) == []  # control
    (synthetic_dataset / "test" / "NORMAL").rename(synthetic_dataset / "test" / "normal")
    assert unused_entries(synthetic_dataset, SPLITS, CLASSES) == []


def _data_check(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "pipeline", "data-check", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_data_check_lists_them_as_text_and_in_json(synthetic_dataset, strays, tmp_path, spec):
    flags = ["--data-dir", str(synthetic_dataset), "--cache-dir", str(tmp_path / "cache"), "--image-size", "32",
             "--seed", "0"]
    result = _data_check(*flags, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {item["path"] for item in report["not_used"]} == {str(p) for p in strays.values()}
    assert all(item["reason"] for item in report["not_used"])
    assert sum(report["splits"]["test"].values()) == 2 * spec.test  # counts unchanged by the strays

    text = _data_check(*flags)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert "  not used 3 entries (no split or class folder):" in lines
    for path in strays.values():
        assert any(line.startswith(f"    {path}: ") for line in lines), path
