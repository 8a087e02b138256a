"""Averaging the K best heads of a search against its best single head, on validation only.

The heads are the search's own trials (same sampled params, seeds, epochs and early stopping as
`make search` on the same cached features); the ensemble's probability is the mean of the top-K
heads' probabilities, ranked by their own val AUC. The figure it prints is what the first step of
issue 21's ensemble question needs before any member is retrained: does averaging move val AUC at all?
"""
from __future__ import annotations

import common
import numpy as np
from sklearn.metrics import roc_auc_score

from pipeline.evaluate.metrics import choose_threshold
from pipeline.search.objective import objective


def main() -> None:
    p = common.head_benchmark_parser(__doc__.splitlines()[0])
    p.add_argument("--members", default="1,3,5", help="ensemble sizes to compare")
    a = p.parse_args()
    common.header("top-K heads averaged vs the best head (validation only)", a, weights=a.weights)
    features = common.head_features(a)
    results = [objective(params, features, epochs=a.epochs, batch_size=a.batch_size, patience=a.patience,
                         seed=a.seed + i) for i, params in enumerate(common.sample_params(a.space, a.trials, a.seed))]
    ranked = sorted(results, key=lambda r: r.score, reverse=True)
    y = features.y_val.astype(int)
    rows = []
    for k in (int(s) for s in a.members.split(",")):
        proba = np.mean([r.val_proba for r in ranked[:k]], axis=0)
        t = choose_threshold(y, proba, "sensitivity")
        pred = proba >= t
        rows.append({"members": k, "val AUC": roc_auc_score(y, proba), "val acc @ sens 0.95": float((pred == y).mean()),
                     "val spec @ sens 0.95": float((~pred[y == 0]).mean())})
    common.table(rows, f"top-K of {len(results)} trials x {a.epochs} epochs, mean probability")


if __name__ == "__main__":
    main()
