"""Training speed with every backbone layer trainable (what pretrain and a from-scratch retrain pay), in img/s.

Random pixels, the pipeline's own model, augmentation pipeline and deterministic ops, one size
after another in one process: the figure that decides how many epochs fit in an hour of CPU.
"""
from __future__ import annotations

import time

import common
import keras
import numpy as np

from pipeline.config import AugmentConfig, ModelConfig
from pipeline.data.augment import image_dataset
from pipeline.modeling.backbones import build_backbone, build_classifier, build_head, compile_model, unfreeze_top
from pipeline.train.finetune import make_deterministic


def images_per_second(backbone: str, size: int, batches: int, batch_size: int, seed: int) -> float:
    keras.backend.clear_session()
    make_deterministic(seed)
    base = build_backbone(ModelConfig(backbone, "none", size), seed=seed)
    model = build_classifier(base, build_head(base.output.shape[-1], 128, 0.3, 0.0, seed=seed))
    unfreeze_top(base, "all", train_batchnorm=True)
    compile_model(model, 1e-3)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 255, (batches * batch_size, size, size), dtype=np.uint8)
    ds = image_dataset(x, rng.integers(0, 2, len(x)), batch_size,
                       augment=AugmentConfig(brightness=0.1, contrast=0.1), shuffle=True, seed=seed)
    model.fit(ds.take(2), verbose=0)  # tracing, not timed
    start = time.perf_counter()
    model.fit(ds, verbose=0)
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], per_class=None)
    p.add_argument("--sizes", default="96,128", help="comma-separated image sizes")
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-images", type=int, default=4470, help="for the minutes-per-epoch column")
    a = p.parse_args()
    common.header("training speed, whole backbone trainable", a)
    rows = []
    for size in (int(s) for s in a.sizes.split(",")):
        speed = images_per_second(a.backbone, size, a.batches, a.batch_size, a.seed)
        rows.append({"backbone": a.backbone, "size": size, "img/s": speed,
                     "min per epoch": a.train_images / speed / 60})
        print(f"  {a.backbone} @{size}px: {speed:.1f} img/s", flush=True)
    common.table(rows, f"{a.batches} batches of {a.batch_size}, augmentation on, deterministic ops")


if __name__ == "__main__":
    main()
