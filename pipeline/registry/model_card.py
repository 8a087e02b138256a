"""The model card of a registered version: Markdown built only from what the registry and its runs hold.

Written at registration and rewritten after every evaluation and promotion, as the artifact
`model_card.md` of the version's run and as the version's description (what the MLflow UI shows).
Only tags, params and metrics go in, never a file name or a file header, so no patient detail can.
"""
from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import PurePath

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pipeline.config import RetrainConfig
from pipeline.registry.promotion import TEST_FINGERPRINT, resolve

CARD_ARTIFACT = "model_card.md"
DATA_COUNTS = "data.counts"  # version tag: JSON {split: {class: images}} of the training data set
DESCRIPTION_LIMIT = 5000  # characters MLflow's SQL stores keep in a version's description
TEST_FIGURES = ("auc", "pr_auc", "accuracy", "sensitivity", "specificity", "precision", "npv", "f1")
EVAL_COLUMNS = ("auc", "sensitivity", "specificity", "accuracy")
CALIBRATION = ("test_brier", "test_brier_uncalibrated", "test_ece", "test_ece_uncalibrated")
SANITY = (("sanity_randomization_spearman_head", "Grad-CAM rank correlation, head randomized",
           "near 1: the maps do not depend on the trained head; near 0: they do"),
          ("sanity_randomization_spearman_blocks", "... head and top backbone blocks randomized",
           "should be lower still; high means the maps show image edges, not the model"),
          ("sanity_full_auc", "ROC-AUC on the whole films (same films)", "the reference for the two below"),
          ("sanity_border_auc", "ROC-AUC, border only (central 60% blanked)",
           "close to the full AUC: the model reads something outside the lungs"),
          ("sanity_centre_auc", "ROC-AUC, centre only (border blanked)", "close to the full AUC: it reads the lungs"))
SHORTCUT_GAP = 0.05  # border-only AUC within this of the full AUC is reported as a likely shortcut
MAPS_IGNORE_WEIGHTS = 0.5  # head-randomized correlation at or above this is reported as maps ignoring the model


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value, digits: int = 3) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:.{digits}f}"


def _with_interval(value, low, high) -> str:
    shown = _fmt(value)
    return shown if _number(low) is None or _number(high) is None else f"{shown} ({_fmt(low)}-{_fmt(high)})"


def _run(client: MlflowClient, run_id: str | None):
    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def evaluation_groups(tags: dict[str, str]) -> dict[str, dict[str, str]]:
    """Every `eval.<fingerprint>.<name>` tag, grouped by fingerprint."""
    groups: dict[str, dict[str, str]] = {}
    for key, value in tags.items():
        parts = key.split(".", 2)
        if len(parts) == 3 and parts[0] == "eval":
            groups.setdefault(parts[1], {})[parts[2]] = value
    return dict(sorted(groups.items()))


def _data_folder(client: MlflowClient, run_id: str | None) -> str:
    """The last two parts of the folder an evaluation run read (its dataset input's source), e.g. chest_xray/test."""
    run = _run(client, run_id)
    for item in (run.inputs.dataset_inputs if run and run.inputs else []):
        try:
            source = json.loads(item.dataset.source)
        except (TypeError, ValueError):
            continue
        uri = source.get("uri") or source.get("path") if isinstance(source, dict) else None
        if uri:
            return "/".join(PurePath(str(uri)).parts[-2:])
    return "?"


def _header(version: ModelVersion, tags: dict) -> list[str]:
    lines = [f"# Model card: {version.name} version {version.version}", ""]
    if tags.get("dataset", "").upper() == "SYNTHETIC":
        lines += ["> **SYNTHETIC demo data.** This version was trained on generated images: its figures are not "
                  "results and it must not be used on any patient.", ""]
    aliases = ", ".join(f"`{a}`" for a in sorted(version.aliases or [])) or "none"
    lines += [f"Aliases: {aliases}. Backbone `{tags.get('backbone', '?')}` (start: `{tags.get('weights', '?')}`), "
              f"{tags.get('image_size', '?')} px, threshold {_fmt(tags.get('threshold'))}."]
    lines += [_members(tags)]
    if "promotion.decision" in tags:
        lines += [f"Last promotion decision: **{tags['promotion.decision']}** (as {tags.get('promotion.role', '?')}, "
                  f"run `{tags.get('promotion.run_id', '?')}`)."]
    return lines + [""]


def _members(tags: dict) -> str:
    """What the served probability averages: one network or several, and the test-time views."""
    try:
        members = json.loads(tags["ensemble.list"])
    except (KeyError, ValueError):
        return "One network, no test-time views (a version from before ensembles, or one without the tags)."
    who = ", ".join(f"trial {m.get('trial', '?')} seed {m.get('seed', '?')}" for m in members)
    views = tags.get("ensemble.tta", "none")
    return (f"Served probability: the mean of {len(members)} network(s) ({who}) over the test-time views "
            f"`{views}`, chosen on validation unless given; Grad-CAM maps are averaged over the networks.")


def _intended_use() -> list[str]:
    return ["## Intended use", "",
            "A second reader that flags likely pneumonia on **children's chest radiographs** (frontal films, as in "
            "the training data: paediatric patients of one hospital). Not a diagnosis. Not for adults: adult films "
            "were never used to train or validate it.", ""]


def _training_data(tags: dict, search) -> list[str]:
    lines = ["## Training data", "", f"Data fingerprint `{tags.get('data_fingerprint', '?')}`."]
    try:
        counts = json.loads(tags[DATA_COUNTS])
    except (KeyError, ValueError):
        counts = None
    if counts:
        classes = sorted({c for split in counts.values() for c in split})
        lines += ["", "| split | " + " | ".join(classes) + " | total |", "|---" * (len(classes) + 2) + "|"]
        lines += [f"| {s} | " + " | ".join(str(n.get(c, 0)) for c in classes) + f" | {sum(n.values())} |"
                  for s, n in counts.items()]
    else:
        lines += ["", "Counts per split and class: not recorded for this version."]
    p = search.data.params if search else {}
    if p:
        rule = (f"test: the data set's `test/` as given. Validation: its own `val/` when that holds at least "
                f"{p.get('min_val_images', '?')} images, else {p.get('val_fraction', '?')} of `train/` held out "
                f"grouped by patient (StratifiedGroupKFold, seed {p.get('seed', '?')}), so no patient is in both.")
        if p.get("max_per_class") not in (None, "None"):
            rule += f" At most {p['max_per_class']} images per class and split."
        lines += ["", "Split rule: " + rule]
    return lines + [""]


def _test_figures(tags: dict, metrics: dict) -> list[str]:
    fp = tags.get(TEST_FINGERPRINT, "?")
    images = tags.get(f"eval.{fp}.images", "?")
    lines = ["## Test figures", "", f"On the test split (fingerprint `{fp}`, {images} films), read once after every "
             f"choice was made; threshold rule `{metrics.get('_threshold_rule', '?')}`. 95% intervals where recorded.",
             "", "| figure | value (95% interval) |", "|---|---|"]
    for name in TEST_FIGURES:
        key = f"test_{name}"
        value = metrics.get(key, tags.get(key) if name in EVAL_COLUMNS else None)
        if _number(value) is not None:
            lines.append(f"| {name} | {_with_interval(value, metrics.get(key + '_ci_low'), metrics.get(key + '_ci_high'))} |")
    return lines + [""]


def _calibration(tags: dict, metrics: dict) -> list[str]:
    lines = ["## Calibration", ""]
    present = [k for k in CALIBRATION if _number(metrics.get(k)) is not None]
    if not present and "calibration.method" not in tags:
        return lines + ["Not recorded: read the probability as a score, not as a risk.", ""]
    lines += [f"Method `{tags.get('calibration.method', '?')}` ({tags.get('calibration.params', '')}), fitted on "
              "validation.", "", "| test figure | value |", "|---|---|"]
    return lines + [f"| {k[5:]} | {_fmt(metrics[k], 4)} |" for k in present] + [""]


def _evaluations(client: MlflowClient, tags: dict) -> list[str]:
    groups, test_fp = evaluation_groups(tags), tags.get(TEST_FINGERPRINT)
    lines = ["## Evaluations", "", "Every data set this version was evaluated on (95% intervals where recorded; "
             "OOD: share of films the out-of-distribution guard flagged).", "",
             "| data set | fingerprint | films | " + " | ".join(EVAL_COLUMNS) + " | OOD share | other | run |",
             "|---" * (len(EVAL_COLUMNS) + 6) + "|"]
    shown = set(EVAL_COLUMNS) | {"images", "run_id", "ood_share"}
    for fp, g in groups.items():
        cells = [_with_interval(g.get(k), g.get(f"{k}_ci_low"), g.get(f"{k}_ci_high")) for k in EVAL_COLUMNS]
        other = ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(g.items())
                          if k not in shown and not k.endswith(("_ci_low", "_ci_high")))
        where = "test split" if fp == test_fp else _data_folder(client, g.get("run_id"))
        ood = _fmt(g["ood_share"]) if "ood_share" in g else "n/a"
        lines.append(f"| {where} | `{fp}` | {g.get('images', '?')} | " + " | ".join(cells)
                     + f" | {ood} | {other or '-'} | `{g.get('run_id', '?')}` |")
    if not groups:
        lines.append("| none | | | " + " | " * len(EVAL_COLUMNS) + " | | |")
    if "ood.detector" in tags:
        lines += ["", f"Out-of-distribution guard: `{tags['ood.detector']}`, threshold {_fmt(tags.get('ood.threshold'), 4)}."]
    return lines + [""]


def _sanity(figures: dict) -> list[str]:
    lines = ["## Explanation sanity checks", ""]
    if not any(_number(figures.get(k)) is not None for k, _, _ in SANITY):
        return lines + ["Not run for this version (retrain-best --sanity-images 0, or an older version).", ""]
    lines += [f"On {figures.get('sanity_images', '?')} test films.", "", "| check | value | how to read it |",
              "|---|---|---|"]
    return lines + [f"| {label} | {_fmt(figures.get(k))} | {reading} |" for k, label, reading in SANITY] + [""]


def _limitations(tags: dict, metrics: dict, figures: dict) -> list[str]:
    items = ["Adult films: not validated (trained and tested on children's films only).",
             "One hospital's films: other sites, devices and protocols are not validated unless listed under "
             "Evaluations.", "Frontal chest films only; lateral views, other body parts and photos are outside its use."]
    if tags.get("calibration.method", "none") == "none":  # what the version serves, not what its run measured
        items.append("Probabilities are not calibrated.")
    if "ood.detector" not in tags:
        items.append("No out-of-distribution guard: any image gets an answer.")
    full, border = _number(figures.get("sanity_full_auc")), _number(figures.get("sanity_border_auc"))
    if full is not None and border is not None and border >= full - SHORTCUT_GAP:
        items.append(f"Shortcut likely: border-only AUC {border:.3f} is within {SHORTCUT_GAP} of the full {full:.3f}.")
    head = _number(figures.get("sanity_randomization_spearman_head"))
    if head is not None and head >= MAPS_IGNORE_WEIGHTS:
        items.append(f"Grad-CAM maps barely depend on the trained head (rank correlation {head:.2f} after "
                     "randomizing it): read them with care.")
    return ["## Known limitations", "", *[f"- {item}" for item in items], ""]


def reproduce_command(retrain, search, client: MlflowClient) -> str:
    """The retrain-best command line that rebuilds this version from its search, from the retrain run's params."""
    if retrain is None:
        return "(the version's run is gone: no command recorded)"
    p = retrain.data.params
    parts = ["python -m pipeline retrain-best"]
    if search is not None:
        parts.append(f"--experiment {client.get_experiment(search.info.experiment_id).name}")
    parts.append(f"--search-run-id {retrain.data.tags.get('search_run_id', '?')}")
    if search is not None and "data_dir" in search.data.params:
        parts.append(f"--data-dir {search.data.params['data_dir']}")
    flags = [f.name for f in fields(RetrainConfig) if f.name != "deterministic"]
    parts += [f"--{name.replace('_', '-')} {p[name]}" for name in flags if p.get(name) not in (None, "None")]
    return " \\\n    ".join(parts)


def model_card(name: str, version: str) -> str:
    """The card of one version, from its tags, its run (params, metrics) and its search run."""
    client = MlflowClient()
    mv = client.get_model_version(name, str(version))
    tags = dict(mv.tags)
    retrain = _run(client, mv.run_id)
    search = _run(client, tags.get("search_run_id") or (retrain.data.tags.get("search_run_id") if retrain else None))
    metrics = dict(retrain.data.metrics) if retrain else {}
    metrics["_threshold_rule"] = retrain.data.params.get("threshold_rule", "?") if retrain else "?"
    figures = {k: tags.get(k, metrics.get(k)) for k, _, _ in SANITY}
    figures["sanity_images"] = tags.get("sanity_images", metrics.get("sanity_images"))
    lines = [*_header(mv, tags), *_intended_use(), *_training_data(tags, search), *_test_figures(tags, metrics),
             *_calibration(tags, metrics), *_evaluations(client, tags), *_sanity(figures),
             *_limitations(tags, metrics, figures), "## Reproduce", "",
             "In the same MLflow store, after the same search:", "", "```",
             reproduce_command(retrain, search, client), "```", ""]
    return "\n".join(lines)


def card_of(uri: str) -> str:
    """models:/NAME@ALIAS or models:/NAME/VERSION -> its card."""
    version = resolve(uri)
    return model_card(version.name, version.version)


def publish_card(name: str, version: str) -> str:
    """Write the card as artifact of the version's run and as the version's description; returns it."""
    client = MlflowClient()
    card = model_card(name, version)
    run_id = client.get_model_version(name, str(version)).run_id
    if run_id:
        client.log_text(run_id, card, CARD_ARTIFACT)
    description = card
    if len(card) > DESCRIPTION_LIMIT:
        note = f"\n\n(cut short: the whole card is the artifact `{CARD_ARTIFACT}` of run `{run_id}`)\n"
        description = card[:DESCRIPTION_LIMIT - len(note)].rsplit("\n", 1)[0] + note
    client.update_model_version(name, str(version), description=description)
    return card
