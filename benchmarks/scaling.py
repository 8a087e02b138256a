"""How the cached search's wall time grows with trials and with images per class.

For each size: load_dataset (decode + CLAHE into an empty cache), build_features (the backbone once
per image and view), then trials of objective() with the same sampled head settings at every size.
The k-trial totals are cumulative over one run of max(--trials) trials (trials are independent).
"""
from __future__ import annotations

import time

import common  # noqa: F401  (sets up paths and quiets TensorFlow first)
import keras

from pipeline.data.dataset import load_dataset
from pipeline.modeling.features import build_features
from pipeline.search.objective import objective

CALIBRATION: dict = {}  # filled by common.clock_calibration, emptied after each size


def ints(text: str) -> list[int]:
    return sorted(int(v) for v in text.split(","))


def one_size(a, per_class: int, params: list[dict]) -> dict:
    data_cfg, pre_cfg, model_cfg, aug_cfg = common.configs(a, per_class)
    t: dict = {}
    with common.timed(t, "decode"):
        dataset = load_dataset(data_cfg, pre_cfg, progress=False)
    with common.timed(t, "features"):
        f = build_features(dataset, model_cfg, pre_cfg, aug_cfg, a.augment_views, data_cfg.cache_dir, seed=a.seed,
                           batch_size=a.batch_size, progress=False)
    t["calibration"] = CALIBRATION.pop("calibration", 0.0)
    trial_s = []
    for i, p in enumerate(params):
        start = time.perf_counter()
        keras.backend.clear_session()
        objective(p, f, epochs=a.epochs, batch_size=a.batch_size, seed=a.seed + i)
        trial_s.append(time.perf_counter() - start)
    backbone_images = f.train_views.shape[0] * f.train_views.shape[1] + len(f.y_val) + len(f.cam_maps)
    return {"n_train": len(f.y_train), "n_val": len(f.y_val), "backbone_images": backbone_images, **t,
            "trial_s": trial_s}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], per_class=None)
    p.add_argument("--sizes", type=ints, default=ints("50,100,200"), help="images per class (train and val each)")
    p.add_argument("--trials", type=ints, default=ints("1,2,4"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--augment-views", type=int, default=2)
    p.add_argument("--space", default=str(common.REPO / "search_spaces/default.yaml"))
    a = p.parse_args()
    common.header("scaling of the cached search: feature build once, then trials on cached vectors", a)
    params = common.sample_params(a.space, max(a.trials), a.seed)
    print(f"  TensorFlow warm-up (one calibration pass, not in the table; a real search pays it once): "
          f"{common.warm_up(a):.1f} s", flush=True)
    common.clock_calibration(CALIBRATION)
    rows = []
    for size in a.sizes:
        r = one_size(a, size, params)
        row = {"per class": size, "train": r["n_train"], "val": r["n_val"], "decode s": r["decode"],
               "features s": r["features"], "of which BN calibration s": r["calibration"],
               "backbone img/s excl. BN": r["backbone_images"] / (r["features"] - r["calibration"]),
               "mean trial s": sum(r["trial_s"]) / len(r["trial_s"])}
        for k in a.trials:
            row[f"total {k} trial{'s' if k > 1 else ''} s"] = r["decode"] + r["features"] + sum(r["trial_s"][:k])
        rows.append(row)
        print(f"  {size} per class done", flush=True)
    common.table(rows, f"wall seconds ({a.epochs} epochs per trial; totals = decode + features + first k trials)")
    small, big = rows[0], rows[-1]
    print(f"\nfrom {small['per class']} to {big['per class']} per class ({big['per class'] / small['per class']:.0f}x the images): "
          f"features {common.ratio(big['features s'], small['features s'])}, "
          f"mean trial {common.ratio(big['mean trial s'], small['mean trial s'])}")
    print("each extra trial adds its 'mean trial s' only: the backbone does not run again")


if __name__ == "__main__":
    main()
