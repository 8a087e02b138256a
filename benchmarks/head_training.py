"""Head training on cached features: keras.Model.fit per trial (a new model, new traced functions each
time) against pipeline/modeling/headfit.py (one compiled graph per head width, reused), same trials, one run.

Both sides train the same heads (params drawn with a seeded sampler from the search space, same
seeds, epochs, batch size, class weights, early stopping on val AUC with best-weight restore) on
the same cached feature vectors; the script prints the time per trial of each, the ratio, and
how far their validation AUCs are apart (same arithmetic, different shuffles and dropout masks).
"""
from __future__ import annotations

import time

import common
import keras
import numpy as np

from pipeline.data.dataset import class_weights, load_dataset
from pipeline.evaluate.metrics import classification_metrics
from pipeline.modeling.backbones import build_head, compile_model
from pipeline.modeling.features import build_features
from pipeline.search.objective import head_proba, objective


def keras_fit_trial(params: dict, features, epochs: int, batch_size: int, patience: int, seed: int) -> tuple[float, float]:
    """The objective as it was before headfit: fit on a new compiled head, several batches per graph call."""
    start = time.perf_counter()
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    head = compile_model(build_head(features.val.shape[1], int(params["dense_units"]), float(params["dropout"]),
                                    float(params["l2"]), seed=seed), float(params["learning_rate"]),
                         steps_per_execution=32)
    head.fit(features.train_views[0], features.y_train.astype(np.float32), batch_size=batch_size, epochs=epochs,
             validation_data=(features.val, features.y_val.astype(np.float32)), shuffle=True, verbose=0,
             class_weight=class_weights(features.y_train),
             callbacks=[keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=patience,
                                                      restore_best_weights=True)])
    score = classification_metrics(features.y_val, head_proba(head, features.val))["val_auc"]
    return time.perf_counter() - start, score


def main() -> None:
    p = common.full_size_search_parser(__doc__.splitlines()[0])
    a = p.parse_args()
    a.per_class = a.per_class or None
    common.header("head training: keras fit per trial vs one compiled graph per width", a)
    data_cfg, pre_cfg, model_cfg, aug_cfg = common.configs(a)
    dataset = load_dataset(data_cfg, pre_cfg, progress=False)
    features = build_features(dataset, model_cfg, pre_cfg, aug_cfg, 0, data_cfg.cache_dir, seed=a.seed,
                              cam_count=0, batch_size=a.batch_size, progress=False)
    print(f"  cached features: train {features.train_views.shape[1]} x {features.val.shape[1]}, "
          f"val {len(features.val)}", flush=True)
    rows = []
    for i, params in enumerate(common.sample_params(a.space, a.trials, a.seed)):
        fit_s, fit_auc = keras_fit_trial(params, features, a.epochs, a.batch_size, a.patience, a.seed + i)
        keras.backend.clear_session()
        start = time.perf_counter()
        ours = objective(params, features, epochs=a.epochs, batch_size=a.batch_size, patience=a.patience,
                         seed=a.seed + i)
        rows.append({"trial": i, "params": common.fmt_params(params), "fit s": fit_s, "fit val AUC": fit_auc,
                     "headfit s": time.perf_counter() - start, "headfit val AUC": ours.score})
    common.table(rows, "per trial (wall seconds)")
    fit_total, ours_total = sum(r["fit s"] for r in rows), sum(r["headfit s"] for r in rows)
    gap = np.abs(np.array([r["fit val AUC"] for r in rows]) - np.array([r["headfit val AUC"] for r in rows]))
    print(f"\nkeras fit: {fit_total:.1f} s ({fit_total / a.trials:.2f} s per trial); headfit: {ours_total:.1f} s "
          f"({ours_total / a.trials:.2f} s per trial); RATIO {common.ratio(fit_total, ours_total)}")
    print(f"val AUC, |fit - headfit| per trial: mean {gap.mean():.4f}, max {gap.max():.4f}; best: fit "
          f"{max(r['fit val AUC'] for r in rows):.4f}, headfit {max(r['headfit val AUC'] for r in rows):.4f}")


if __name__ == "__main__":
    main()
