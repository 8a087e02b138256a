"""What each `python -m pipeline <command>` does, given its parsed flags; pipeline/cli.py declares the flags.

Every config is made from the flags with options.build, so the dataclass validates each value before
any work; heavy libraries are imported inside the commands, after that.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.command_config import (
    EvaluateOptions,
    ModelCardOptions,
    PredictOptions,
    PretrainOptions,
    PromoteOptions,
    RetrainOptions,
    ServeOptions,
)
from pipeline.config import (
    AugmentConfig,
    ConfigError,
    DataConfig,
    ModelConfig,
    PreprocessConfig,
    PretrainConfig,
    PromoteConfig,
    RetrainConfig,
    SearchConfig,
)
from pipeline.evaluate.report import print_calibration_and_ood, print_report
from pipeline.options import build

RUN_TAGS: dict[str, str] = {}  # --tag NAME=VALUE of this invocation, set once by cli.main()


def extra_tags() -> dict:
    """Tags every run of this command carries (`--tag`; the demo marks its runs as synthetic with it)."""
    return dict(RUN_TAGS)


def _data_configs(a) -> tuple[DataConfig, PreprocessConfig]:
    return build(DataConfig, a), build(PreprocessConfig, a)


def _require_data_dir(path: Path) -> None:
    if not path.is_dir():
        raise ConfigError(
            f"no dataset at {path} (looked in {path.resolve()}).\n"
            "  - download it:            make data            (Kaggle: paultimothymooney/chest-xray-pneumonia)\n"
            "  - use a copy you have:    make search DATA_DIR=/path/to/chest_xray\n"
            "  - try everything first:   make demo            (small synthetic data set, a few minutes)")


def data_check(a) -> int:
    from pipeline.data.dataset import CLASSES, SPLITS, load_dataset, shared_patient_ids
    from pipeline.data.strays import unused_entries

    data_cfg, pre_cfg = _data_configs(a)
    _require_data_dir(data_cfg.data_dir)
    ds = load_dataset(data_cfg, pre_cfg, progress=not a.json)
    unused = unused_entries(data_cfg.data_dir, SPLITS, CLASSES)  # a third class, images outside class folders
    report = {"splits": ds.counts(), "skipped": ds.skipped, "not_used": unused, "fingerprint": ds.fingerprint}
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
    print(f"  not used {len(unused)} entr{'y' if len(unused) == 1 else 'ies'} (no split or class folder)"
          + (":" if unused else ""))
    for item in unused:
        print(f"    {item['path']}: {item['reason']}")
    return 0


def search(a) -> int:
    from pipeline.search.space import load_space
    from pipeline.search.workers import install_stop_handlers, run_workers

    data_cfg, pre_cfg = _data_configs(a)
    model_cfg = build(ModelConfig, a, image_size=pre_cfg.image_size)
    aug_cfg = build(AugmentConfig, a)
    cfg = build(SearchConfig, a)
    _require_data_dir(data_cfg.data_dir)
    space = load_space(cfg.space)  # fail on a bad space before any image is read
    install_stop_handlers()
    if a.workers != 1:
        return run_workers(a, a.parser)  # a supervisor: it loads no data and no TensorFlow
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
                              seed=data_cfg.seed, cam_count=cfg.gradcam_images, batch_size=cfg.batch_size)
    print(f"features {'loaded from' if features.from_cache else 'cached in'} {features.directory}", flush=True)
    run_search(dataset, features, space, cfg, data_cfg, pre_cfg, aug_cfg, model_cfg, tags=extra_tags())
    return 0


def retrain_best(a) -> int:
    import mlflow

    from pipeline.config import from_params
    from pipeline.data.dataset import load_dataset
    from pipeline.infra import tracking
    from pipeline.modeling.backbones import check_weights
    from pipeline.train.finetune import find_search
    from pipeline.train.members import plan_members
    from pipeline.train.retrain import retrain_best

    cfg, source = build(RetrainConfig, a), build(RetrainOptions, a)
    tracking.connect()
    if mlflow.get_experiment_by_name(source.experiment) is None:  # looked up, not created by the lookup
        known = sorted(e.name for e in mlflow.search_experiments(max_results=50))
        raise ConfigError(f"--experiment {source.experiment}: no such MLflow experiment in {tracking.tracking_uri()} "
                          f"(there: {', '.join(known) or 'none'}); pass the experiment your search wrote to")
    tracking.setup(source.experiment)
    search = find_search(source.experiment, source.search_run_id)
    p = search.params
    overrides = {"data_dir": source.data_dir} if source.data_dir else {}
    data_cfg = from_params(DataConfig, p, **overrides)
    pre_cfg, aug_cfg = from_params(PreprocessConfig, p), from_params(AugmentConfig, p)
    model_cfg = from_params(ModelConfig, p)
    _require_data_dir(data_cfg.data_dir)
    check_weights(model_cfg)
    members = plan_members(search, cfg, data_cfg.seed)  # too few finished trials: said before decoding a film
    if len(members) == 1:
        print(f"retraining best trial {members[0].trial} of search {search.run_id}: {members[0].params}", flush=True)
    else:
        print(f"retraining {len(members)} members of search {search.run_id} as one version: trials "
              f"{', '.join(m.trial for m in members)}, seeds {', '.join(str(m.seed) for m in members)}", flush=True)
    dataset = load_dataset(data_cfg, pre_cfg)
    features_dir = data_cfg.cache_dir / "features" / search.features_key
    run_id, version, evaluation = retrain_best(dataset, search, members, model_cfg, aug_cfg, pre_cfg, cfg,
                                               features_dir, data_cfg.seed, tags=extra_tags())
    report = evaluation.report
    print(f"test (n={len(evaluation.manifest)}, fingerprint {evaluation.fingerprint}), threshold "
          f"{report['threshold']:.3f} chosen on val ({cfg.threshold_rule}):")
    print_report(report, ("auc", "pr_auc", "accuracy", "sensitivity", "specificity", "precision", "npv", "f1",
                          "accuracy_at_0.5", "sensitivity_at_0.5", "specificity_at_0.5"), width=24)
    print_calibration_and_ood(report)
    print(f"registered {cfg.model_name} v{version.version} as 'challenger' (run {run_id}); next: make promote")
    return 0


def pretrain(a) -> int:
    from pipeline.data.dataset import load_dataset
    from pipeline.train.pretrain import default_output, run_pretrain

    cfg = build(PretrainConfig, a)
    data_cfg, pre_cfg = _data_configs(a)
    aug_cfg = build(AugmentConfig, a)
    model_cfg = build(ModelConfig, a, weights="none", image_size=pre_cfg.image_size)
    options = build(PretrainOptions, a)
    _require_data_dir(data_cfg.data_dir)
    dataset = load_dataset(data_cfg, pre_cfg)
    output = options.output or default_output(model_cfg, dataset.fingerprint)
    path, best_auc, run_id = run_pretrain(dataset, model_cfg, aug_cfg, pre_cfg, cfg, Path(output), data_cfg.seed,
                                          tags=extra_tags())
    print(f"pretrained backbone saved to {path} (best val AUC {best_auc:.4f}; MLflow run {run_id})")
    print(f"next: make search WEIGHTS={path} BACKBONE={model_cfg.backbone} IMAGE_SIZE={pre_cfg.image_size} "
          f"DATA_DIR={data_cfg.data_dir}")
    return 0


def promote(a) -> int:
    """Exit 0: promoted (or rolled back); registry.KEPT_EXIT_CODE (3): the champion stays."""
    from pipeline.evaluate.paired import compare_versions
    from pipeline.evaluate.step import EVALUATE_EXPERIMENT, evaluate_like
    from pipeline.infra import tracking
    from pipeline.registry.model_card import publish_card
    from pipeline.registry.promotion import KEPT_EXIT_CODE, promote, rollback

    cfg, options = build(PromoteConfig, a), build(PromoteOptions, a)
    tracking.connect()
    if options.rollback:
        decision = rollback(options.model_name)
    else:
        def evaluate_champion(champion, challenger, fingerprint):
            tracking.setup(EVALUATE_EXPERIMENT)
            return evaluate_like(champion, challenger, fingerprint, tags=extra_tags())

        decision = promote(options.model_name, cfg, evaluate_champion, compare_versions)
    for number in {decision.challenger, decision.champion} - {None}:  # aliases and decision tags changed
        publish_card(options.model_name, number)
    print(decision.reason)
    if decision.run_id:
        print(f"decision recorded: run {decision.run_id} (experiment 'model-promotions') and tags promotion.* "
              "on the versions")
    return 0 if decision.promoted else KEPT_EXIT_CODE


def evaluate(a) -> int:
    from pipeline.evaluate.step import evaluate_version
    from pipeline.evaluate.testset import labelled_manifest
    from pipeline.infra import tracking
    from pipeline.registry.model_card import publish_card
    from pipeline.registry.promotion import resolve

    options = build(EvaluateOptions, a)  # checks the model URI before MLflow is touched
    tracking.setup(options.experiment)
    version = resolve(options.model)
    manifest = labelled_manifest(Path(options.data_dir))
    print(f"evaluating {version.name} v{version.version} on {len(manifest)} images of {options.data_dir}", flush=True)
    result = evaluate_version(version, manifest, gradcam_images=options.gradcam_images, tags=extra_tags())
    publish_card(version.name, version.version)  # the card gains this evaluation
    r = result.report
    print(f"fingerprint {result.fingerprint}  n={len(result.manifest)}  threshold {r['threshold']:.3f} (the version's)")
    print_report(r, ("auc", "pr_auc", "accuracy", "sensitivity", "specificity", "precision", "npv", "f1"))
    print_calibration_and_ood(r)
    print(f"run {result.run_id} (experiment '{options.experiment}'); tagged v{version.version} "
          f"eval.{result.fingerprint}.{{auc,accuracy,sensitivity,specificity}} and their _ci_low/_ci_high")
    return 0


def model_card(a) -> int:
    from pipeline.infra import tracking
    from pipeline.registry.model_card import card_of

    options = build(ModelCardOptions, a)
    tracking.connect()
    card = card_of(options.model)
    if options.output is None:
        print(card)
        return 0
    Path(options.output).parent.mkdir(parents=True, exist_ok=True)
    Path(options.output).write_text(card)
    print(f"model card of {options.model} written to {options.output}")
    return 0


def predict(a) -> int:
    from pipeline.infra import tracking
    from pipeline.serving.predict import predict_images

    options = build(PredictOptions, a)  # the model URI and the output folder, before MLflow is touched
    from pipeline.explain.lime import check_explain, check_samples

    check_explain(options.explain)  # before the store is touched: bad input leaves nothing behind (no mlruns/)
    check_samples(options.lime_samples)
    tracking.connect()
    run = predict_images(options.model, a.images, Path(options.output), explain=options.explain,
                         lime_samples=options.lime_samples)
    results = run.results
    print(f"model {options.model} -> {run.model_uri} (resolved once), threshold {run.threshold:.3f}")
    for r in results:
        if r.error:
            print(f"error: {r.error}", file=sys.stderr)
        else:
            shown = [f"Grad-CAM: {r.overlay}"] if r.overlay else []
            if r.in_distribution is False:  # the version's OOD guard: the answer is not to be trusted
                shown.insert(0, f"OUT OF DISTRIBUTION (ood_score {r.ood_score:.3g}): unlike the training films")
            if r.lime_overlay:
                shown += [f"LIME: {r.lime_overlay}", f"agreement (IoU) {r.agreement:.2f}"]
            print(f"{r.path}\tp(pneumonia)={r.probability:.4f}\t{r.label}\t" + "\t".join(shown))
    print(f"predictions: {run.csv}")
    return 1 if any(r.error for r in results) else 0


def serve(a) -> int:
    from pipeline.serving.launch import serve as launch

    options = build(ServeOptions, a)
    return launch(options.model, options.host, options.port)  # checks, then becomes `mlflow models serve`


def download(a) -> int:
    from pipeline.data.download import download

    download(Path(a.data_dir))
    return 0
