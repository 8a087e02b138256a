"""The real Kermany set, when the shared copy is there: counts and the patient-grouped split (no decoding)."""
from __future__ import annotations

import pytest

from pipeline.config import DataConfig
from pipeline.data.dataset import assign_splits, scan
from tests.helpers import REPO

REAL_DATA = REPO.parent / "shared" / "data" / "chest_xray"

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real data set not found at {REAL_DATA}")]


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    manifest, skipped = scan(REAL_DATA)
    cfg = DataConfig(data_dir=REAL_DATA, cache_dir=tmp_path_factory.mktemp("cache"), seed=42)
    return assign_splits(manifest, cfg), skipped


def test_counts(real):
    manifest, skipped = real
    assert skipped == []
    assert manifest["split"].isin(["train", "val"]).sum() == 5216
    assert (manifest["split"] == "test").sum() == 624
    by_class = manifest[manifest["split"] != "test"].groupby("class_name").size().to_dict()
    assert by_class == {"NORMAL": 1341, "PNEUMONIA": 3875}


def test_val_is_patient_grouped_and_stratified(real):
    manifest, _ = real
    train, val = manifest[manifest["split"] == "train"], manifest[manifest["split"] == "val"]
    assert not set(train["patient_id"]) & set(val["patient_id"])
    assert 0.10 < len(val) / (len(train) + len(val)) < 0.20
    share = (val["label"] == 1).mean(), (train["label"] == 1).mean()
    assert abs(share[0] - share[1]) < 0.05  # stratified: same PNEUMONIA share in both
