"""Share of a search trial spent on its Grad-CAM grid: cached conv maps vs tf-keras-vis on the full model.

Each trial does what TrialRunner does: objective() on the cached features, then the Grad-CAM grid of
the fixed validation images (gradcam_on_features + the head's probabilities + grid_figure, saved as a
PNG, as mlflow.log_figure does). For comparison, the naive way: tf-keras-vis Gradcam on the flat
classifier (build_classifier(backbone, the trial's head)), which runs the backbone on those images
again every trial. The flat model is built outside the naive timing, as if a trial already held it.
"""
from __future__ import annotations

from pathlib import Path

import common  # noqa: F401  (sets up paths and quiets TensorFlow first)
import keras
import matplotlib.pyplot as plt
import numpy as np

from pipeline.data.dataset import load_dataset
from pipeline.data.preprocess import to_model_input
from pipeline.explain.gradcam import gradcam, gradcam_on_features, grid_figure
from pipeline.modeling.backbones import build_backbone, build_classifier, conv_layer_name
from pipeline.modeling.features import build_features
from pipeline.search.objective import objective

TARGET_PERCENT = 10.0


def save_grid(grays, cams, labels, probs, path: Path) -> None:
    fig = grid_figure(grays, cams, labels, probs, title="Grad-CAM, fixed validation images")
    fig.savefig(path)
    plt.close(fig)


def cached_cam(head, f, path: Path, t: dict) -> np.ndarray:
    """TrialRunner._log_gradcam, with a file in place of the MLflow artifact store."""
    with common.timed(t, "maps"):
        cams = gradcam_on_features(head, f.cam_maps, f.cam_images.shape[1])
        probs = head.predict(f.cam_maps.mean(axis=(1, 2)), verbose=0).reshape(-1)
    with common.timed(t, "figure"):
        save_grid(f.cam_images, cams, f.cam_labels, probs, path)
    return cams


def naive_cam(flat, f, path: Path) -> np.ndarray:
    images = to_model_input(f.cam_images)
    cams = gradcam(flat, images, conv_layer_name(flat))
    probs = flat.predict(images, verbose=0).reshape(-1)
    save_grid(f.cam_images, cams, f.cam_labels, probs, path)
    return cams


def explained_layer(flat) -> str:
    """The layer tf-keras-vis really explains for pipeline.explain.gradcam.gradcam (it seeks a Conv layer by default)."""
    from tf_keras_vis.utils import find_layer
    from tf_keras_vis.utils.model_modifiers import Conv

    return find_layer(flat, lambda layer: isinstance(layer, Conv), offset=flat.get_layer(conv_layer_name(flat))).name


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10, help="the search's default; the share shrinks as trials get longer")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--augment-views", type=int, default=2)
    p.add_argument("--gradcam-images", type=int, default=8)
    p.add_argument("--space", default=str(common.REPO / "search_spaces/default.yaml"))
    a = p.parse_args()
    common.header("Grad-CAM overhead per trial: cached conv maps  vs  tf-keras-vis on the full model", a)
    data_cfg, pre_cfg, model_cfg, aug_cfg = common.configs(a)
    dataset = load_dataset(data_cfg, pre_cfg, progress=False)
    f = build_features(dataset, model_cfg, pre_cfg, aug_cfg, a.augment_views, data_cfg.cache_dir, seed=a.seed,
                       cam_count=a.gradcam_images, batch_size=a.batch_size, progress=False)
    print(f"  train vectors per epoch {f.train_views.shape[0] * f.train_views.shape[1]}, "
          f"val {len(f.y_val)}, Grad-CAM images {len(f.cam_images)}", flush=True)
    out = common.tempdir("bench-gradcam-")

    rows = []
    for i, params in enumerate(common.sample_params(a.space, a.trials, a.seed)):
        t: dict = {}
        keras.backend.clear_session()
        with common.timed(t, "objective"):
            result = objective(params, f, epochs=a.epochs, batch_size=a.batch_size, seed=a.seed + i)
        with common.timed(t, "cam"):
            cams = cached_cam(result.head, f, out / f"cached-{i}.png", t)
        with common.timed(t, "build flat"):
            base = build_backbone(model_cfg, seed=a.seed)
            base.load_weights(f.backbone_weights)
            flat = build_classifier(base, result.head)
        with common.timed(t, "naive"):
            naive = naive_cam(flat, f, out / f"naive-{i}.png")
        rows.append({"trial": i, "objective s": t["objective"], "Grad-CAM s": t["cam"],
                     "share %": 100 * t["cam"] / (t["objective"] + t["cam"]), "of which maps s": t["maps"],
                     "figure s": t["figure"],
                     "naive Grad-CAM s": t["naive"], "naive share %": 100 * t["naive"] / (t["objective"] + t["naive"]),
                     "naive/cached": common.ratio(t["naive"], t["cam"]),
                     "mean |map diff|": float(np.abs(cams - naive).mean()), "flat build s": t["build flat"]})
    common.table(rows, "per trial (seconds; share = Grad-CAM / (objective + Grad-CAM))")
    obj, cam, naive = (float(np.mean([r[k] for r in rows])) for k in ("objective s", "Grad-CAM s", "naive Grad-CAM s"))
    share = 100 * cam / (obj + cam)
    print(f"\nmean: objective {obj:.2f} s, Grad-CAM from cached maps {cam:.2f} s = {share:.1f}% of a trial "
          f"(target < {TARGET_PERCENT:.0f}%: {'met' if share < TARGET_PERCENT else 'NOT met at these settings'})")
    print(f"naive tf-keras-vis on the full model: {naive:.2f} s = {100 * naive / (obj + naive):.1f}% of a trial; "
          f"RATIO naive/cached {naive / cam:.1f}x (the naive figure excludes building the flat model)")
    picked = explained_layer(flat)
    same = picked == conv_layer_name(flat)
    print(f"maps: the cached Grad-CAM explains '{conv_layer_name(flat)}' (the backbone output the head pools); "
          f"pipeline.explain.gradcam.gradcam lets tf-keras-vis seek the nearest Conv layer from there: '{picked}'"
          + (", the same layer; the maps differ only in upsampling" if same else
             f": a different layer, hence mean |map diff| {np.mean([r['mean |map diff|'] for r in rows]):.3f}"))


if __name__ == "__main__":
    main()
