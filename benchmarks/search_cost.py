"""Cost of a head search: the seeds' way (ImageDataGenerator + frozen backbone every batch) vs the cached pipeline.

Both sides train the same heads (same sampled params, seeds, epochs, batch size, early stopping,
class weights) on the same images through the same backbone weights, and score them on the same
validation images. What differs is where the backbone runs:
  (a) seeds:   every epoch of every trial decodes, augments and pushes every image through the backbone;
  (b) project: decode + CLAHE once (load_dataset), backbone once per image and view (build_features),
               then each trial fits the head on the cached vectors (objective).
Run (b) first: it also writes the calibrated random backbone that (a) then loads, so both use one model.
"""
from __future__ import annotations

import time

import common  # noqa: F401  (sets up paths and quiets TensorFlow first)
import keras
import numpy as np

from pipeline.config import SearchConfig
from pipeline.data.dataset import class_weights, load_dataset
from pipeline.evaluate.metrics import LOWER_IS_BETTER, classification_metrics
from pipeline.modeling.backbones import build_backbone, build_classifier, build_head, compile_model
from pipeline.modeling.features import build_features
from pipeline.search.objective import objective

TARGET = 30.0


class EpochClock:
    """Timestamps of epoch ends, to split a trial into per-epoch cost and fixed cost (build, tracing, scoring)."""

    def __init__(self):
        self.ends: list[float] = []

    def __call__(self, epoch=None, logs=None) -> bool:
        self.ends.append(time.perf_counter())
        return True

    def epoch_seconds(self) -> float:
        gaps = np.diff(self.ends)  # the first epoch also pays graph tracing, so it is left out
        return float(gaps.mean()) if len(gaps) else float("nan")


def project_side(a, data_cfg, pre_cfg, model_cfg, aug_cfg, params: list[dict]) -> dict:
    out = {"trials": [], "calibration": 0.0}
    common.clock_calibration(out)
    with common.timed(out, "load"):
        dataset = load_dataset(data_cfg, pre_cfg, progress=False)
    with common.timed(out, "features"):
        features = build_features(dataset, model_cfg, pre_cfg, aug_cfg, a.augment_views, data_cfg.cache_dir,
                                  seed=a.seed, batch_size=a.batch_size, progress=False)
    for i, p in enumerate(params):
        clock, start = EpochClock(), time.perf_counter()
        keras.backend.clear_session()  # as TrialRunner does before every trial
        result = objective(p, features, epochs=a.epochs, batch_size=a.batch_size, patience=a.patience,
                           metric=a.metric, seed=a.seed + i, on_epoch=clock)
        out["trials"].append({"seconds": time.perf_counter() - start, "score": result.score,
                              "epochs": len(clock.ends), "epoch_s": clock.epoch_seconds()})
    out["dataset"], out["featureset"] = dataset, features
    return out


def seeds_trial(a, p: dict, i: int, model_cfg, weights, train_flow, val_flow, y_train, y_val) -> dict:
    clock, start = EpochClock(), time.perf_counter()
    keras.backend.clear_session()
    base = build_backbone(model_cfg, seed=a.seed)
    base.load_weights(weights)  # the seeds loaded ImageNet weights here; this is the same backbone as (b)'s
    base.trainable = False
    head = build_head(base.output_shape[-1], int(p["dense_units"]), float(p["dropout"]), float(p["l2"]),
                      seed=a.seed + i)
    keras.utils.set_random_seed(a.seed + i)
    model = compile_model(build_classifier(base, head), float(p["learning_rate"]))
    mode = "min" if a.metric in LOWER_IS_BETTER else "max"
    model.fit(train_flow, validation_data=val_flow, epochs=a.epochs, verbose=0, class_weight=class_weights(y_train),
              callbacks=[keras.callbacks.EarlyStopping(monitor=a.metric, mode=mode, patience=a.patience,
                                                       restore_best_weights=True),
                         keras.callbacks.LambdaCallback(on_epoch_end=clock)])
    proba = model.predict(val_flow, verbose=0).reshape(-1)
    metrics = classification_metrics(y_val, proba)
    score = metrics.get(a.metric, float("nan"))
    return {"seconds": time.perf_counter() - start, "score": score, "epochs": len(clock.ends),
            "epoch_s": clock.epoch_seconds()}


def seeds_side(a, manifest, pre_cfg, model_cfg, aug_cfg, params: list[dict], weights) -> dict:
    train, val = manifest[manifest["split"] == "train"], manifest[manifest["split"] == "val"]
    train_flow = common.seeds_flow(train, aug_cfg, pre_cfg, a.batch_size, shuffle=True, seed=a.seed)
    val_flow = common.seeds_flow(val, None, pre_cfg, a.batch_size, shuffle=False, seed=a.seed)
    y_train, y_val = train["label"].to_numpy(), val["label"].to_numpy()
    return {"trials": [seeds_trial(a, p, i, model_cfg, weights, train_flow, val_flow, y_train, y_val)
                       for i, p in enumerate(params)]}


def fixed_cost(trials: list[dict]) -> tuple[float, float]:
    """(seconds per epoch, seconds per trial outside epochs), averaged over trials."""
    epoch_s = float(np.nanmean([t["epoch_s"] for t in trials]))
    fixed = float(np.mean([t["seconds"] - t["epochs"] * epoch_s for t in trials]))
    return epoch_s, fixed


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--metric", default="val_auc")
    p.add_argument("--augment-views", type=int, default=SearchConfig().augment_views,
                   help="(b): augmented copies of train in the feature cache (the project default)")
    p.add_argument("--space", default=str(common.REPO / "search_spaces/default.yaml"))
    p.add_argument("--estimate-trials", type=int, default=10, help="trials of the ESTIMATE line (Makefile default)")
    p.add_argument("--estimate-epochs", type=int, default=10, help="epochs of the ESTIMATE line (Makefile default)")
    a = p.parse_args()
    common.header("search cost: ImageDataGenerator + backbone per batch  vs  decode/feature cache + head only", a,
                  seeds_generator=common.SEEDS_GENERATOR_NAME)
    data_cfg, pre_cfg, model_cfg, aug_cfg = common.configs(a)
    params = common.sample_params(a.space, a.trials, a.seed)

    print(f"  TensorFlow warm-up (one calibration pass, before either side is timed): {common.warm_up(a):.1f} s",
          flush=True)
    start = time.perf_counter()
    proj = project_side(a, data_cfg, pre_cfg, model_cfg, aug_cfg, params)
    proj_total = time.perf_counter() - start
    manifest = common.subset(data_cfg)
    used = proj["dataset"].manifest
    same = sorted(used.loc[used["split"].isin(["train", "val"]), "path"]) == sorted(manifest["path"])
    counts = manifest.groupby(["split", "class_name"]).size().to_dict()
    val = manifest[manifest["split"] == "val"]
    seeds_pixels = common.seeds_flow(val, None, pre_cfg, a.batch_size, shuffle=False, seed=a.seed)[0][0][..., 0]
    diff = np.abs(seeds_pixels - proj["dataset"].split("val")[0][:len(seeds_pixels)]).max()
    print(f"  images: {counts}; both sides use the same files: {same}; "
          f"first val batch, max pixel difference between (a)'s and (b)'s preprocessing: {diff:.0f}")
    print(f"  (b) also decodes the test split's {int((used['split'] == 'test').sum())} images and caches Grad-CAM maps "
          f"of {len(proj['featureset'].cam_maps)} val images: work (a) does not do, counted against (b)", flush=True)

    start = time.perf_counter()
    seeds = seeds_side(a, manifest, pre_cfg, model_cfg, aug_cfg, params, proj["featureset"].backbone_weights)
    seeds_total = time.perf_counter() - start

    common.table([{"trial": i, "params": common.fmt_params(prm),
                   "(a) seeds s": s["seconds"], f"(a) {a.metric}": s["score"],
                   "(b) project s": b["seconds"], f"(b) {a.metric}": b["score"],
                   "per-trial ratio": common.ratio(s["seconds"], b["seconds"])}
                  for i, (prm, s, b) in enumerate(zip(params, seeds["trials"], proj["trials"]))],
                 "per trial (wall seconds; (b) excludes the one-off caches)")
    proj_trials = sum(t["seconds"] for t in proj["trials"])
    print(f"\n(a) seeds' way, {a.trials} trials x {a.epochs} epochs:           {seeds_total:8.1f} s")
    print(f"(b) project, total:                                {proj_total:8.1f} s"
          f"  (decode+CLAHE cache {proj['load']:.1f} s, feature cache {proj['features']:.1f} s "
          f"of which BatchNorm calibration {proj['calibration']:.1f} s, trials {proj_trials:.1f} s)")
    print(f"(b) project, per trial excluding the caches:       {proj_trials / a.trials:8.2f} s"
          f"  vs (a) {seeds_total / a.trials:.1f} s per trial: {common.ratio(seeds_total, proj_trials)}")
    total_ratio = seeds_total / proj_total
    print(f"RATIO (a)/(b), whole search incl. the one-off caches: {total_ratio:.1f}x   "
          f"target >= {TARGET:.0f}x: {'met' if total_ratio >= TARGET else 'NOT met at these settings'}")
    print(f"      the same without the BatchNorm calibration (weights=none only; ImageNet weights skip it): "
          f"{common.ratio(seeds_total, proj_total - proj['calibration'])}")

    # Linear estimate from this run's own figures: (a) pays every epoch of every trial, (b) the caches once.
    s_epoch, s_fixed = fixed_cost(seeds["trials"])
    b_epoch, b_fixed = fixed_cost(proj["trials"])
    T, E = a.estimate_trials, a.estimate_epochs
    s_proj = T * (s_fixed + E * s_epoch)
    b_proj = proj["load"] + proj["features"] + T * (b_fixed + E * b_epoch)
    print(f"per epoch: (a) {s_epoch:.2f} s, (b) {b_epoch:.3f} s; per trial outside epochs: (a) {s_fixed:.1f} s, "
          f"(b) {b_fixed:.2f} s")
    print(f"ESTIMATE (linear, from the figures above, not measured) for {T} trials x {E} epochs on these images: "
          f"(a) {s_proj:.0f} s, (b) {b_proj:.0f} s, ratio {s_proj / b_proj:.1f}x "
          f"(measure it with --trials {T} --epochs {E}); without the calibration: "
          f"{common.ratio(s_proj, b_proj - proj['calibration'])}")


if __name__ == "__main__":
    main()
