"""Seconds per film of LIME (pipeline.explain.lime) next to Grad-CAM's, on real test films, with their agreement.

The classifier is a seeded random start (weights=none, BatchNorm calibrated on real train films, an
untrained head): ImageNet weights cannot be downloaded here. Its explanations mean nothing medically;
its cost per film is what a trained model of the same architecture and size costs.
"""
from __future__ import annotations

import time

import common
import numpy as np

from pipeline.config import ModelConfig, PreprocessConfig
from pipeline.data.preprocess import preprocess_file, to_model_input
from pipeline.explain.gradcam import gradcam
from pipeline.explain.lime import DEFAULT_SAMPLES, agreement, explain_lime, iou
from pipeline.modeling.backbones import (
    build_backbone,
    build_classifier,
    build_head,
    calibrate_batchnorm,
    conv_layer_name,
)

TARGET_SECONDS = 30.0  # one film, default settings, 2 CPU cores (the budget)


def films(data_dir: str, split: str, count: int, seed: int) -> list[str]:
    """`count` films of the `split/` folder, half of each class, picked with a seeded generator."""
    from pathlib import Path

    from pipeline.data.dataset import CLASSES

    rng = np.random.default_rng(seed)
    picks = []
    for i, cls in enumerate(reversed(CLASSES)):  # PNEUMONIA first, so an odd count favours it
        paths = sorted(str(f) for f in (Path(data_dir) / split / cls).iterdir() if f.suffix.lower() in (".jpeg", ".jpg", ".png"))
        picks += [paths[j] for j in rng.permutation(len(paths))[: (count + 1 - i) // 2]]
    return picks


def random_classifier(a, calibration: np.ndarray):
    """The pipeline's flat classifier on a seeded random backbone; BatchNorm calibrated as build_features does."""
    base = build_backbone(ModelConfig(a.backbone, "none", a.image_size), seed=a.seed)
    calibrate_batchnorm(base, to_model_input(calibration))
    head = build_head(base.output.shape[-1], 64, 0.2, 1e-4, seed=a.seed)
    return build_classifier(base, head)


def main() -> None:
    p = common.parser(__doc__, per_class=None)
    p.set_defaults(image_size=128)  # the project's real-data runs on this machine use 128 px
    p.add_argument("--images", type=int, default=3, help="test films explained (half of each class)")
    p.add_argument("--samples", default=f"{DEFAULT_SAMPLES},600",
                   help="comma-separated LIME sample counts; the first is timed as the default")
    a = p.parse_args()
    counts = [int(s) for s in a.samples.split(",")]
    common.header("LIME vs Grad-CAM cost per film", a, model="RANDOM weights (untrained head), see docstring")
    pre = PreprocessConfig(a.image_size)
    calibration = np.stack([preprocess_file(f, pre) for f in films(a.data_dir, "train", 32, a.seed)])
    model = random_classifier(a, calibration)
    layer = conv_layer_name(model)
    paths = films(a.data_dir, "test", a.images, a.seed)
    grays = [preprocess_file(f, pre) for f in paths]

    gradcam(model, to_model_input(grays[0][None]), layer)  # warm-up: tf-keras-vis clones and traces once
    explain_lime(model, grays[0], samples=20, seed=a.seed)  # warm-up: the first eager pass
    rows = []
    for path, gray in zip(paths, grays):
        start = time.perf_counter()
        cam = gradcam(model, to_model_input(gray[None]), layer)[0]
        row = {"film": path.split("/")[-2][:1] + "/" + path.split("/")[-1], "Grad-CAM s": time.perf_counter() - start}
        masks = {}
        for n in counts:
            start, cpu = time.perf_counter(), time.process_time()
            lime = explain_lime(model, gray, samples=n, seed=a.seed)
            row[f"LIME {n} s"] = time.perf_counter() - start
            row[f"CPU {n} s"] = time.process_time() - cpu
            row[f"agree@{n}"] = agreement(cam, lime.mask)
            masks[n] = lime.mask
        row["superpixels"] = len(lime.weights)
        row["p(pneu)"] = lime.probability
        if len(counts) > 1:
            row[f"mask IoU {counts[0]} vs {counts[-1]}"] = iou(masks[counts[0]], masks[counts[-1]])
        rows.append(row)
    common.table(rows, f"per film ({a.backbone} weights=none at {a.image_size} px, RANDOM: untrained)")
    cam_s = float(np.mean([r["Grad-CAM s"] for r in rows]))
    lime_s = float(np.mean([r[f"LIME {counts[0]} s"] for r in rows]))
    print(f"\nmean: Grad-CAM {cam_s:.2f} s/film, LIME at {counts[0]} samples {lime_s:.2f} s/film "
          f"({common.ratio(lime_s, cam_s)} Grad-CAM); target < {TARGET_SECONDS:.0f} s/film on 2 cores: "
          f"{'met' if lime_s < TARGET_SECONDS else 'NOT met'} (a shared machine: see the load average above)")
    for n in counts:
        wall, cpu = (float(np.mean([r[f"{k} {n} s"] for r in rows])) for k in ("LIME", "CPU"))
        print(f"LIME at {n} samples: {wall:.2f} s/film wall, {cpu:.2f} s/film of CPU time: on 2 idle cores "
              f"about {cpu / 2:.1f}-{cpu:.1f} s wall (CPU time does not grow when other jobs share the cores)")


if __name__ == "__main__":
    main()
