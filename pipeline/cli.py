"""`python -m pipeline <command>`: the one entry point; flags become typed configs here, at the edge."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline.config import (
    LIME_SAMPLES,
    AugmentConfig,
    ConfigError,
    DataConfig,
    Interrupted,
    ModelConfig,
    PipelineError,
    PreprocessConfig,
    PretrainConfig,
    PromoteConfig,
    RetrainConfig,
    SearchConfig,
    check_folder,
    check_model_uri,
)

DEFAULT_DATA_DIR = "data/chest_xray"


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="dataset root with train/, test/ [val/] (default: %(default)s)")
    g.add_argument("--max-per-class", type=int, default=None, help="at most N images per class and split (smoke runs)")
    g.add_argument("--val-fraction", type=float, default=0.15, help="share of train carved out for validation, by patient (default: %(default)s)")
    g.add_argument("--min-val-images", type=int, default=100, help="use the dataset's own val/ only if it has at least this many images (default: %(default)s)")
    g.add_argument("--seed", type=int, default=42, help="seed for splits, sampling and initialisation (default: %(default)s)")
    g.add_argument("--cache-dir", default=".cache", help="where decoded images and backbone features are cached (default: %(default)s)")
    g.add_argument("--image-size", type=int, default=224, help="square input size in pixels (default: %(default)s)")
    g.add_argument("--clahe-clip", type=float, default=2.0, help="CLAHE clip limit (default: %(default)s)")
    g.add_argument("--clahe-grid", type=int, default=8, help="CLAHE tile grid size (default: %(default)s)")


def _add_augment_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("augmentation (fractions, as Keras preprocessing layers take them)")
    g.add_argument("--rotation", type=float, default=0.03, help="rotation, fraction of a full turn (default: %(default)s)")
    g.add_argument("--shift", type=float, default=0.1, help="translation, fraction of size (default: %(default)s)")
    g.add_argument("--zoom", type=float, default=0.1, help="zoom range (default: %(default)s)")
    g.add_argument("--shear", type=float, default=0.1, help="shear range (default: %(default)s)")
    g.add_argument("--no-flip", action="store_true", help="turn off horizontal flips")
    g.add_argument("--brightness", type=float, default=0.0, help="brightness change, fraction of the pixel range (default: %(default)s)")
    g.add_argument("--contrast", type=float, default=0.0, help="contrast change, fraction (default: %(default)s)")


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--backbone", default="resnet50", help="resnet50, resnet152, mobilenetv2, efficientnetb0 or densenet121 (default: %(default)s)")
    g.add_argument("--weights", default="imagenet", help="imagenet, none, or a local .h5/.weights.h5 file (default: %(default)s)")


def _data_configs(a) -> tuple[DataConfig, PreprocessConfig]:
    data = DataConfig(data_dir=Path(a.data_dir), val_fraction=a.val_fraction, min_val_images=a.min_val_images,
                      max_per_class=a.max_per_class, seed=a.seed, cache_dir=Path(a.cache_dir))
    return data, PreprocessConfig(a.image_size, a.clahe_clip, a.clahe_grid)


def _augment_config(a) -> AugmentConfig:
    return AugmentConfig(a.rotation, a.shift, a.zoom, a.shear, not a.no_flip, a.brightness, a.contrast)


def _require_data_dir(path: Path) -> None:
    if not path.is_dir():
        raise ConfigError(
            f"no dataset at {path} (looked in {path.resolve()}).\n"
            "  - download it:            make data            (Kaggle: paultimothymooney/chest-xray-pneumonia)\n"
            "  - use a copy you have:    make search DATA_DIR=/path/to/chest_xray\n"
            "  - try everything first:   make demo            (small synthetic data set, a few minutes)")


def cmd_data_check(a) -> int:
    from pipeline.data.dataset import load_dataset, shared_patient_ids

    data_cfg, pre_cfg = _data_configs(a)
    _require_data_dir(data_cfg.data_dir)
    ds = load_dataset(data_cfg, pre_cfg, progress=not a.json)
    report = {"splits": ds.counts(), "skipped": ds.skipped, "fingerprint": ds.fingerprint}
    if a.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"dataset {data_cfg.data_dir}  fingerprint {ds.fingerprint}")
    for split, counts in report["splits"].items():
        print(f"  {split:5s} " + "  ".join(f"{cls}={n}" for cls, n in counts.items()) + f"  total={sum(counts.values())}")
    shared = shared_patient_ids(ds.manifest)
    if shared:
        print(f"  note: {len(shared)} patient id(s) appear in both train/val and test (e.g. {', '.join(shared[:3])}); "
              "test/ is used as given, so if these are the same patients, test figures are optimistic")
    print(f"  skipped {len(ds.skipped)} file(s)" + (":" if ds.skipped else ""))
    for item in ds.skipped:
        print(f"    {item['path']}: {item['reason']}")
    return 0


def cmd_search(a) -> int:
    from pipeline.search.space import load_space
    from pipeline.search.workers import install_stop_handlers, run_workers

    data_cfg, pre_cfg = _data_configs(a)
    model_cfg = ModelConfig(a.backbone, a.weights, a.image_size)
    aug_cfg = _augment_config(a)
    cfg = SearchConfig(engine=a.engine, trials=a.trials, epochs=a.epochs, batch_size=a.batch_size, patience=a.patience,
                       metric=a.metric, space=Path(a.space), experiment=a.experiment, storage=a.storage,
                       study_name=a.study_name, augment_views=a.augment_views, gradcam_images=a.gradcam_images,
                       seed=a.seed, heartbeat=a.heartbeat)
    _require_data_dir(data_cfg.data_dir)
    space = load_space(cfg.space)  # fail on a bad space before any image is read
    install_stop_handlers()
    if a.workers != 1:
        return run_workers(a, build_parser())  # a supervisor: it loads no data and no TensorFlow
    from pipeline.data.dataset import load_dataset
    from pipeline.infra import tracking
    from pipeline.modeling.backbones import check_weights
    from pipeline.modeling.features import build_features
    from pipeline.search.engines import run_search

    tracking.setup(cfg.experiment)  # a deleted experiment, a wrong weights file: said before any image is decoded
    check_weights(model_cfg)

    dataset = load_dataset(data_cfg, pre_cfg)
    print(f"data {dataset.fingerprint}: " + ", ".join(f"{s} {sum(c.values())}" for s, c in dataset.counts().items())
          + f"; skipped {len(dataset.skipped)}", flush=True)
    features = build_features(dataset, model_cfg, pre_cfg, aug_cfg, cfg.augment_views, data_cfg.cache_dir,
                              seed=cfg.seed, cam_count=cfg.gradcam_images, batch_size=cfg.batch_size)
    print(f"features {'loaded from' if features.from_cache else 'cached in'} {features.directory}", flush=True)
    run_search(dataset, features, space, cfg, data_cfg, pre_cfg, aug_cfg, model_cfg, tags=_extra_tags())
    return 0


def cmd_retrain_best(a) -> int:
    import mlflow

    from pipeline.config import from_params
    from pipeline.data.dataset import load_dataset
    from pipeline.infra import tracking
    from pipeline.modeling.backbones import check_weights
    from pipeline.train.finetune import find_search
    from pipeline.train.retrain import retrain_best

    cfg = RetrainConfig(epochs=a.epochs, fine_tune_epochs=a.fine_tune_epochs, fine_tune_layers=a.fine_tune_layers,
                        fine_tune_lr_factor=a.fine_tune_lr_factor, fine_tune_lr=a.fine_tune_lr, batch_size=a.batch_size, patience=a.patience,
                        threshold_rule=a.threshold_rule, target_sensitivity=a.target_sensitivity,
                        model_name=a.model_name, gradcam_images=a.gradcam_images, lime_images=a.lime_images)
    tracking.connect()
    if mlflow.get_experiment_by_name(a.experiment) is None:  # looked up, not created by the lookup
        known = sorted(e.name for e in mlflow.search_experiments(max_results=50))
        raise ConfigError(f"--experiment {a.experiment}: no such MLflow experiment in {tracking.tracking_uri()} "
                          f"(there: {', '.join(known) or 'none'}); pass the experiment your search wrote to")
    tracking.setup(a.experiment)
    search = find_search(a.experiment, a.search_run_id)
    p = search.params
    overrides = {"data_dir": Path(a.data_dir)} if a.data_dir else {}
    data_cfg = from_params(DataConfig, p, **overrides)
    pre_cfg, aug_cfg = from_params(PreprocessConfig, p), from_params(AugmentConfig, p)
    model_cfg = from_params(ModelConfig, p)
    _require_data_dir(data_cfg.data_dir)
    check_weights(model_cfg)
    print(f"retraining best trial {search.best_trial} of search {search.run_id}: {search.best_params}", flush=True)
    dataset = load_dataset(data_cfg, pre_cfg)
    features_dir = data_cfg.cache_dir / "features" / search.features_key
    run_id, version, evaluation = retrain_best(dataset, search, model_cfg, aug_cfg, pre_cfg, cfg, features_dir,
                                               data_cfg.seed, tags=_extra_tags())
    report = evaluation.report
    print(f"test (n={len(evaluation.manifest)}, fingerprint {evaluation.fingerprint}), threshold "
          f"{report['threshold']:.3f} chosen on val ({cfg.threshold_rule}):")
    for key in ("test_auc", "test_pr_auc", "test_accuracy", "test_sensitivity", "test_specificity", "test_precision",
                "test_f1", "test_accuracy_at_0.5", "test_sensitivity_at_0.5", "test_specificity_at_0.5"):
        print(f"  {key:26s} {report[key]:.4f}")
    print(f"registered {cfg.model_name} v{version.version} as 'challenger' (run {run_id}); next: make promote")
    return 0


def cmd_pretrain(a) -> int:
    from pipeline.data.dataset import load_dataset
    from pipeline.train.pretrain import default_output, run_pretrain

    cfg = PretrainConfig(epochs=a.epochs, learning_rate=a.learning_rate, warmup_epochs=a.warmup_epochs,
                         weight_decay=a.weight_decay, label_smoothing=a.label_smoothing, batch_size=a.batch_size,
                         patience=a.patience)
    data_cfg, pre_cfg = _data_configs(a)
    aug_cfg = _augment_config(a)
    model_cfg = ModelConfig(a.backbone, "none", a.image_size)
    if a.output:
        check_folder(Path(a.output).parent, "--output")
        if not a.output.endswith(".weights.h5"):
            raise ConfigError(f"--output {a.output}: Keras saves backbone weights only to a name ending in "
                              ".weights.h5; pass e.g. pretrained/mobilenetv2.weights.h5")
    _require_data_dir(data_cfg.data_dir)
    dataset = load_dataset(data_cfg, pre_cfg)
    output = Path(a.output) if a.output else default_output(model_cfg, dataset.fingerprint)
    path, best_auc, run_id = run_pretrain(dataset, model_cfg, aug_cfg, pre_cfg, cfg, output, data_cfg.seed,
                                          tags=_extra_tags())
    print(f"pretrained backbone saved to {path} (best val AUC {best_auc:.4f}; MLflow run {run_id})")
    print(f"next: make search WEIGHTS={path} BACKBONE={a.backbone} IMAGE_SIZE={a.image_size} DATA_DIR={a.data_dir}")
    return 0


def cmd_promote(a) -> int:
    """Exit 0: promoted (or rolled back); registry.KEPT_EXIT_CODE (3): the champion stays."""
    from pipeline.evaluate.step import EVALUATE_EXPERIMENT, evaluate_like
    from pipeline.infra import tracking
    from pipeline.registry.promotion import KEPT_EXIT_CODE, promote, rollback

    cfg = PromoteConfig(min_auc=a.min_auc, min_sensitivity=a.min_sensitivity, margin=a.margin)
    tracking.connect()
    if a.rollback:
        decision = rollback(a.model_name)
    else:
        def evaluate_champion(champion, challenger, fingerprint):
            tracking.setup(EVALUATE_EXPERIMENT)
            return evaluate_like(champion, challenger, fingerprint, tags=_extra_tags())

        decision = promote(a.model_name, cfg, evaluate_champion)
    print(decision.reason)
    if decision.run_id:
        print(f"decision recorded: run {decision.run_id} (experiment 'model-promotions') and tags promotion.* "
              "on the versions")
    return 0 if decision.promoted else KEPT_EXIT_CODE


def cmd_evaluate(a) -> int:
    from pipeline.evaluate.step import evaluate_version
    from pipeline.evaluate.testset import labelled_manifest
    from pipeline.infra import tracking
    from pipeline.registry.promotion import resolve

    check_model_uri(a.model)  # before MLflow is touched
    if a.gradcam_images < 0:
        raise ConfigError(f"--gradcam-images {a.gradcam_images} is invalid: expected an integer >= 0 (0 for no grid)")
    tracking.setup(a.experiment)
    version = resolve(a.model)
    manifest = labelled_manifest(Path(a.data_dir))
    print(f"evaluating {version.name} v{version.version} on {len(manifest)} images of {a.data_dir}", flush=True)
    result = evaluate_version(version, manifest, gradcam_images=a.gradcam_images, tags=_extra_tags())
    r = result.report
    print(f"fingerprint {result.fingerprint}  n={len(result.manifest)}  threshold {r['threshold']:.3f} (the version's)")
    for key in ("test_auc", "test_pr_auc", "test_accuracy", "test_sensitivity", "test_specificity", "test_precision",
                "test_f1"):
        print(f"  {key[5:]:12s} {r[key]:.4f}")
    print(f"run {result.run_id} (experiment '{a.experiment}'); tagged v{version.version} "
          f"eval.{result.fingerprint}.{{auc,accuracy,sensitivity,specificity}}")
    return 0


def cmd_predict(a) -> int:
    from pipeline.infra import tracking
    from pipeline.serving.predict import predict_images

    check_model_uri(a.model)
    output = check_folder(Path(a.output), "--output")
    tracking.connect()
    from pipeline.explain.lime import check_explain, check_samples

    check_explain(a.explain)
    check_samples(a.lime_samples)
    run = predict_images(a.model, a.images, output, explain=a.explain, lime_samples=a.lime_samples)
    results = run.results
    print(f"model {a.model} -> {run.model_uri} (resolved once), threshold {run.threshold:.3f}")
    for r in results:
        if r.error:
            print(f"error: {r.error}", file=sys.stderr)
        else:
            shown = [f"Grad-CAM: {r.overlay}"] if r.overlay else []
            if r.lime_overlay:
                shown += [f"LIME: {r.lime_overlay}", f"agreement (IoU) {r.agreement:.2f}"]
            print(f"{r.path}\tp(pneumonia)={r.probability:.4f}\t{r.label}\t" + "\t".join(shown))
    print(f"predictions: {run.csv}")
    return 1 if any(r.error for r in results) else 0


def cmd_serve(a) -> int:
    from pipeline.serving.launch import serve

    return serve(a.model, a.host, a.port)  # checks, then becomes `mlflow models serve`


def cmd_download(a) -> int:
    from pipeline.data.download import download

    download(Path(a.data_dir))
    return 0


_RUN_TAGS: dict[str, str] = {}  # --tag KEY=VALUE of this invocation, set once by main()


def _extra_tags() -> dict:
    """Tags every run of this command carries (`--tag`; the demo marks its runs as synthetic with it)."""
    return dict(_RUN_TAGS)


def _parse_tags(items: list[str]) -> dict[str, str]:
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--tag {item!r} is invalid: expected NAME=VALUE, e.g. --tag dataset=SYNTHETIC")
        tags[key.strip()] = value
    return tags


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag gives one `error:` line (flag, value, where help is), exit 2, no usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pipeline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--tag", action="append", default=[], metavar="NAME=VALUE",
                        help="tag every MLflow run this command writes (repeatable; before the command name)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data-check", help="count, validate and fingerprint a dataset",
                       description="Per split and class, how many images will be used; skipped files; fingerprint.")
    _add_data_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=cmd_data_check)

    p = sub.add_parser("search", help="hyperparameter search over the head, every trial logged to MLflow",
                       description="Keras Tuner random search or an Optuna study over the head of a frozen backbone.")
    _add_data_flags(p)
    _add_model_flags(p)
    _add_augment_flags(p)
    g = p.add_argument_group("search")
    g.add_argument("--engine", default="optuna", help="optuna or kerastuner (default: %(default)s)")
    g.add_argument("--trials", type=int, default=10, help="total trials (a resumed study counts those it has) (default: %(default)s)")
    g.add_argument("--epochs", type=int, default=10, help="max epochs per trial, early stopping inside (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    g.add_argument("--patience", type=int, default=3, help="early-stopping patience in epochs (default: %(default)s)")
    g.add_argument("--metric", default="val_auc", help="val_auc, val_f1, val_accuracy or val_loss (default: %(default)s)")
    g.add_argument("--space", default="search_spaces/default.yaml", help="search space YAML (default: %(default)s)")
    g.add_argument("--experiment", default="pneumonia-search", help="MLflow experiment (default: %(default)s)")
    g.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite:///mlruns/optuna.db)")
    g.add_argument("--study-name", default=None, help="Optuna study / Keras Tuner project; the same name resumes "
                                                       "(default: derived from experiment, engine, backbone, data)")
    g.add_argument("--augment-views", type=int, default=0, help="augmented copies of train in the feature cache; 0 scored best on the real data (benchmarks/augment_views.py) (default: %(default)s)")
    g.add_argument("--gradcam-images", type=int, default=8, help="validation images in each trial's Grad-CAM grid (default: %(default)s)")
    g.add_argument("--workers", type=int, default=1, help="worker processes on this machine, one study, cores shared out (Optuna) (default: %(default)s)")
    g.add_argument("--heartbeat", type=int, default=10, help="seconds between a trial's heartbeats; a worker silent for 3 is dead and its trial retried (default: %(default)s)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("retrain-best", help="retrain the best trial with fine-tuning, evaluate on test, register",
                       description="Two-stage retraining of a search's best configuration; registers a challenger.")
    p.add_argument("--experiment", default="pneumonia-search", help="MLflow experiment of the search (default: %(default)s)")
    p.add_argument("--search-run-id", default=None, help="search parent run (default: the latest finished search)")
    p.add_argument("--data-dir", default=None, help="dataset root (default: the one the search used)")
    p.add_argument("--epochs", type=int, default=10, help="stage 1 epochs, frozen backbone (default: %(default)s)")
    p.add_argument("--fine-tune-epochs", type=int, default=10, help="stage 2 epochs; 0 skips it (default: %(default)s)")
    p.add_argument("--fine-tune-layers", default="30", help="top backbone layers to unfreeze, or 'all' (use 'all' with --weights none) (default: %(default)s)")
    p.add_argument("--fine-tune-lr-factor", type=float, default=0.1, help="stage 2 learning rate = best lr x this (default: %(default)s)")
    p.add_argument("--fine-tune-lr", type=float, default=None, help="stage 2 learning rate, overriding the factor "
                   "(training a random start from scratch wants ~1e-3)")
    p.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    p.add_argument("--patience", type=int, default=4, help="early-stopping patience (default: %(default)s)")
    p.add_argument("--threshold-rule", default="sensitivity", help="sensitivity (reach --target-sensitivity on val) or youden (default: %(default)s)")
    p.add_argument("--target-sensitivity", type=float, default=0.95, help="(default: %(default)s)")
    p.add_argument("--model-name", default="pneumonia-classifier", help="registered model name (default: %(default)s)")
    p.add_argument("--gradcam-images", type=int, default=12, help="test images in the Grad-CAM grid (default: %(default)s)")
    p.add_argument("--lime-images", type=int, default=0, help="LIME grid of the same test images and its agreement with Grad-CAM; slow (default: %(default)s)")
    p.set_defaults(func=cmd_retrain_best)

    defaults = PretrainConfig()
    p = sub.add_parser("pretrain", help="train a backbone from scratch on the train split, save it for --weights PATH",
                       description="The offline path: every layer of a random-start backbone trained once on the "
                                   "train split (AdamW, warmup + cosine, label smoothing); val picks the epoch. The "
                                   "saved no-top weights file is what search/retrain take as --weights PATH.")
    _add_data_flags(p)
    _add_augment_flags(p)
    p.add_argument("--backbone", default="mobilenetv2", help="(default: %(default)s)")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="(default: %(default)s)")
    p.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="peak learning rate (default: %(default)s)")
    p.add_argument("--warmup-epochs", type=int, default=defaults.warmup_epochs, help="(default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="AdamW weight decay (default: %(default)s)")
    p.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing, help="(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="(default: %(default)s)")
    p.add_argument("--patience", type=int, default=defaults.patience, help="early-stopping patience on val AUC (default: %(default)s)")
    p.add_argument("--output", default=None, help="weights file, *.weights.h5 (default: pretrained/BACKBONE-SIZEpx-FINGERPRINT.weights.h5)")
    p.set_defaults(func=cmd_pretrain)

    criteria = PromoteConfig()  # the defaults live there, once
    p = sub.add_parser("promote", help="move 'champion' to the challenger if it is better (or --rollback)",
                       description="Compare challenger and champion on the same test set; promote only if the "
                                   "criteria pass. Exit 0: promoted; exit 3: champion kept; exit 2: error.")
    p.add_argument("--model-name", default="pneumonia-classifier", help="(default: %(default)s)")
    p.add_argument("--min-auc", type=float, default=criteria.min_auc, help="test ROC-AUC every promotion needs, the first included (default: %(default)s)")
    p.add_argument("--margin", type=float, default=criteria.margin, help="ROC-AUC gain the challenger needs (default: %(default)s)")
    p.add_argument("--min-sensitivity", type=float, default=criteria.min_sensitivity, help="challenger's test sensitivity must reach this (default: %(default)s)")
    p.add_argument("--rollback", action="store_true", help="make 'previous-champion' the champion again")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("evaluate", help="evaluate a registered version on any labelled folder, tag the version",
                       description="Metrics, ROC, PR, confusion matrix and Grad-CAM of MODEL on DATA_DIR (NORMAL/ + "
                                   "PNEUMONIA/, or a data-set root's test/), as an MLflow run linked to the version.")
    p.add_argument("--model", default="models:/pneumonia-classifier@champion", help="models:/NAME@ALIAS or models:/NAME/VERSION (default: %(default)s)")
    p.add_argument("--data-dir", required=True, help="folder with NORMAL/ and PNEUMONIA/, or a data-set root with test/")
    p.add_argument("--experiment", default="pneumonia-evaluate", help="MLflow experiment of the evaluation runs (default: %(default)s)")
    p.add_argument("--gradcam-images", type=int, default=8, help="images in the Grad-CAM grid; 0 for none (default: %(default)s)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify images with a registered model, write Grad-CAM overlays",
                       description="Load a model from the registry (models:/NAME@ALIAS) and classify images.")
    p.add_argument("--model", default="models:/pneumonia-classifier@champion", help="(default: %(default)s)")
    p.add_argument("--output", default="outputs/predictions", help="folder for predictions.csv and Grad-CAM overlays (default: %(default)s)")
    p.add_argument("--explain", default="gradcam", help="gradcam, lime or both: the overlays written per image; "
                   "lime/both also give Grad-CAM/LIME agreement (default: %(default)s)")
    p.add_argument("--lime-samples", type=int, default=LIME_SAMPLES, help="perturbed films LIME fits on per image "
                   "(default: %(default)s: about 2-30 s per film on 2 cores, by backbone)")
    p.add_argument("images", nargs="+", help="image files (.jpeg, .jpg, .png), folders or glob patterns")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("serve", help="check MODEL, then serve it with `mlflow models serve` (REST, /invocations)",
                       description="Checks that MODEL resolves in the registry (and PNEUMONIA_SERVE_PATH_ROOT, if "
                                   "set, is a folder), then runs mlflow models serve on the pinned version.")
    p.add_argument("--model", default="models:/pneumonia-classifier@champion", help="models:/NAME@ALIAS or models:/NAME/VERSION (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=5001, help="(default: %(default)s)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("download", help="download the Kaggle dataset with kagglehub into --data-dir",
                       description="Fetch paultimothymooney/chest-xray-pneumonia; fails at once when offline.")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="(default: %(default)s)")
    p.set_defaults(func=cmd_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        _RUN_TAGS.clear()
        _RUN_TAGS.update(_parse_tags(args.tag))
        return args.func(args)
    except Interrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted: stopped before anything was saved by this step; run the same command again", file=sys.stderr)
        return 130
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
