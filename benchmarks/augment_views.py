"""How many augmented views the feature cache should hold: best val AUC of the same search with 0, 1, 2, 4.

The cache is built once with the most views; a cache with k views is exactly its first k + 1
slices (clean first, then view v with seed + 1 + v), so every setting sees identical features and
only the number of views differs. Each setting then runs the same seeded TPE search (Optuna,
in-memory) through the project's one `objective`. This measures quality, not speed: it prints
the best and mean val AUC per setting and the seconds a trial cost.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import optuna
from common import configs, parser, table

from pipeline.data.dataset import load_dataset
from pipeline.modeling.features import build_features
from pipeline.search.objective import objective
from pipeline.search.space import load_space


def main() -> None:
    p = parser(__doc__.splitlines()[0], per_class=100000)
    p.add_argument("--views", default="0,1,2,4", help="comma-separated view counts to compare")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--space", default="search_spaces/default.yaml")
    p.set_defaults(image_size=128)
    a = p.parse_args()
    views = sorted(int(v) for v in a.views.split(","))
    data_cfg, pre_cfg, model_cfg, aug_cfg = configs(a)
    dataset = load_dataset(data_cfg, pre_cfg)
    counts = {s: sum(c.values()) for s, c in dataset.counts().items()}
    print(f"data {dataset.fingerprint}: {counts}; {a.backbone}@{a.image_size}px weights=none; "
          f"{a.trials} TPE trials x {a.epochs} epochs per setting", flush=True)
    start = time.perf_counter()
    full = build_features(dataset, model_cfg, pre_cfg, aug_cfg, max(views), data_cfg.cache_dir, seed=a.seed,
                          cam_count=2, batch_size=32)
    print(f"feature cache with {max(views)} views: {time.perf_counter() - start:.0f} s", flush=True)
    space = load_space(a.space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for k in views:
        features = dataclasses.replace(full, train_views=full.train_views[: k + 1])
        seconds = []

        def trial_fn(trial: optuna.Trial) -> float:
            result = objective(space.suggest_optuna(trial), features, epochs=a.epochs, seed=a.seed + trial.number)
            seconds.append(result.seconds)
            return result.score

        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=a.seed))
        study.optimize(trial_fn, n_trials=a.trials)
        scores = [t.value for t in study.trials]
        rows.append({"views": k, "train vectors": features.train_views.shape[0] * features.train_views.shape[1],
                     "best val AUC": round(max(scores), 4), "mean val AUC": round(float(np.mean(scores)), 4),
                     "s per trial": round(float(np.mean(seconds)), 1)})
        print(rows[-1], flush=True)
    table(rows, "augmented views in the feature cache (same seeds, same TPE sequence)")


if __name__ == "__main__":
    main()
