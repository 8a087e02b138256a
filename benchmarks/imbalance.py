"""Class balance for the head search: class weights vs SMOTE on cached train features vs nothing, same budget.

Every setting trains the same trials (params drawn once with a seeded sampler from the search space,
same seeds, epochs and early stopping) on the same cached feature vectors; only the balance of the
training vectors differs. Validation alone ranks them (the test split is not read): the setting whose
best trial scores highest on val AUC is the one `search --imbalance` defaults to.
"""
from __future__ import annotations

import statistics
import time

import common

from pipeline.evaluate.metrics import choose_threshold
from pipeline.modeling.balance import IMBALANCE
from pipeline.search.objective import objective


def main() -> None:
    a = common.head_benchmark_parser(__doc__.splitlines()[0]).parse_args()
    common.header("class balance of the head search: class-weights vs smote vs none", a, weights=a.weights)
    features = common.head_features(a)
    y = features.y_train
    print(f"  cached features: train {len(y)} ({int((y == 0).sum())} NORMAL / {int((y == 1).sum())} PNEUMONIA) "
          f"x {features.val.shape[1]}, val {len(features.val)}", flush=True)
    trials = common.sample_params(a.space, a.trials, a.seed)
    rows = []
    for how in IMBALANCE:
        start, scores, best = time.perf_counter(), [], None
        for i, params in enumerate(trials):
            result = objective(params, features, epochs=a.epochs, batch_size=a.batch_size, patience=a.patience,
                               seed=a.seed + i, imbalance=how)
            scores.append(result.score)
            if best is None or result.score > best.score:
                best = result
        t = choose_threshold(features.y_val, best.val_proba, "sensitivity")
        pred = best.val_proba >= t
        yv = features.y_val.astype(bool)
        rows.append({"imbalance": how, "best val AUC": max(scores), "median val AUC": statistics.median(scores),
                     "val acc @ sens 0.95": float((pred == yv).mean()),
                     "val spec @ sens 0.95": float((~pred[~yv]).mean()), "minutes": (time.perf_counter() - start) / 60})
        print(f"  {how}: best val AUC {max(scores):.4f}", flush=True)
    common.table(rows, f"{len(trials)} trials x {a.epochs} epochs each, same params and seeds per setting")
    chosen = max(rows, key=lambda r: (r["best val AUC"], r["val acc @ sens 0.95"]))
    print(f"validation chooses: --imbalance {chosen['imbalance']}")


if __name__ == "__main__":
    main()
