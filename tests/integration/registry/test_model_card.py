"""The model card of a real registered version (pipeline.registry.model_card), its description and artifact."""
from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.data.dataset import patient_id
from pipeline.registry.model_card import CARD_ARTIFACT, DATA_COUNTS, evaluation_groups, model_card, publish_card
from pipeline.registry.promotion import CHAMPION, TEST_FINGERPRINT, register

pytestmark = pytest.mark.slow  # real Keras training behind the registry fixture
TRAINED = "trained"


def card_artifact(run_id: str) -> str:
    return mlflow.artifacts.load_text(f"runs:/{run_id}/{CARD_ARTIFACT}")


def copy_of_trained(name: str) -> str:
    """A version of the trained pyfunc under its own name, with v1's tags, so this test owns its evaluations."""
    src = MlflowClient().get_model_version(TRAINED, "1")
    version = register(f"runs:/{src.run_id}/model", name, dict(src.tags)).version
    publish_card(name, version)
    return version


def test_card_of_a_retrained_version_names_data_test_figures_sanity_limits_and_the_command(registry):
    client = MlflowClient()
    v = client.get_model_version(TRAINED, "1")
    tags, card = v.tags, model_card(TRAINED, "1")
    run = client.get_run(v.run_id)
    assert tags["data_fingerprint"] in card and tags[TEST_FINGERPRINT] in card
    assert f"| auc | {float(tags['test_auc']):.3f}" in card
    counts = json.loads(tags[DATA_COUNTS])
    assert f"| train | {counts['train']['NORMAL']} | {counts['train']['PNEUMONIA']} |" in card
    assert "Adult films: not validated" in card and "children's chest radiographs" in card
    for name in ("sanity_randomization_spearman_head", "sanity_border_auc", "sanity_centre_auc", "sanity_full_auc"):
        assert run.data.metrics[name] == pytest.approx(float(tags[name]), abs=1e-6)
    assert f"| {float(tags['sanity_border_auc']):.3f} |" in card
    assert "python -m pipeline retrain-best" in card and f"--search-run-id {tags['search_run_id']}" in card
    assert "--epochs 1" in card and "--fine-tune-layers all" in card and "--sanity-images 32" in card
    assert "the mean of 1 network(s)" in card and "--top-k 1" in card and "--tta auto" in card
    # registration published it: the description and the run's artifact are this card
    assert v.description == card and card_artifact(v.run_id) == card


def test_model_card_command_prints_and_writes_the_card(registry, tmp_path, capsys):
    card = model_card(TRAINED, "1")
    assert main(["model-card", "--model", f"models:/{TRAINED}/1"]) == 0
    assert capsys.readouterr().out == card + "\n"
    out = tmp_path / "cards" / "v1.md"
    assert main(["model-card", "--model", f"models:/{TRAINED}/1", "--output", str(out)]) == 0
    assert out.read_text() == card
    assert main(["model-card", "--model", f"models:/{TRAINED}/1", "--output", str(tmp_path)]) == 2
    assert "error: --output" in capsys.readouterr().err
    assert main(["model-card", "--model", "models:/no-such-model/1"]) == 2


def test_evaluating_on_another_folder_adds_it_to_the_card_and_promotion_refreshes_it(registry, synthetic_dir):
    client = MlflowClient()
    version = copy_of_trained("card-evaluated")
    before = model_card("card-evaluated", version)
    assert len(evaluation_groups(client.get_model_version("card-evaluated", version).tags)) == 1  # test split only
    assert main(["evaluate", "--model", f"models:/card-evaluated/{version}", "--data-dir",
                 str(synthetic_dir / "train"), "--gradcam-images", "0"]) == 0
    v = client.get_model_version("card-evaluated", version)
    groups = evaluation_groups(v.tags)
    new_fp = next(fp for fp in groups if fp != v.tags[TEST_FINGERPRINT])
    after = model_card("card-evaluated", version)
    assert new_fp not in before and new_fp in after  # control: it was not there before
    row = next(line for line in after.splitlines() if new_fp in line)
    assert row.startswith("| chest_xray/train |") and f"{float(groups[new_fp]['auc']):.3f}" in row
    assert v.description == after and card_artifact(v.run_id) == after

    assert main(["promote", "--model-name", "card-evaluated", "--min-auc", "0", "--min-sensitivity", "0"]) == 0
    v = client.get_model_version("card-evaluated", version)
    promoted = model_card("card-evaluated", version)
    assert CHAMPION in v.aliases and f"`{CHAMPION}`" in promoted and f"`{CHAMPION}`" not in after
    assert "Last promotion decision: **promoted**" in promoted and v.description == promoted


def test_card_carries_no_file_name_or_patient_id(registry, synthetic_dir):
    v = MlflowClient().get_model_version(TRAINED, "1")
    card = model_card(TRAINED, "1")
    files = [p for p in synthetic_dir.rglob("*") if p.is_file()]
    predictions = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=v.tags[f"eval.{v.tags[TEST_FINGERPRINT]}.run_id"], artifact_path="evaluation/predictions.csv"))
    assert files and len(predictions)  # control: there are names and hashes that could leak
    lowered = card.lower()
    leaked = [p.name for p in files if p.stem.lower() in lowered or patient_id(p.name).lower() in lowered]
    leaked += [sha for sha in predictions["sha"] if sha in card]
    assert not leaked, leaked
    for header_field in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "AccessionNumber"):
        assert header_field.lower() not in lowered


def test_a_version_without_new_tags_gets_a_card_that_says_what_is_missing(registry):
    src = MlflowClient().get_model_version(TRAINED, "1")
    keep = {k: v for k, v in src.tags.items()
            if not k.startswith(("sanity_", DATA_COUNTS, "calibration.", "ood.", "ensemble."))}
    # control: v1 has its counts, calibration and guard; the copy has none of them
    assert DATA_COUNTS in src.tags and "calibration.method" in src.tags and "ood.detector" in src.tags
    version = register(f"runs:/{src.run_id}/model", "card-bare", keep).version
    card = publish_card("card-bare", version)
    assert "Counts per split and class: not recorded" in card
    assert "Probabilities are not calibrated." in card and "No out-of-distribution guard" in card
    assert "One network, no test-time views" in card
