"""Writes docs/explain-example.png: one real test film, its Grad-CAM and LIME overlays and their agreement.

The model is quick to build on 2 CPU cores, not a good one: MobileNetV2 at 128 px with RANDOM conv
weights (weights=none, BatchNorm calibrated on real films, as the pipeline does), and only its head
trained, on the frozen features of a few hundred real train films. The figure shows what the
explanations look like, not what a trained model attends to.

    .venv/bin/python docs/explain_example.py --data-dir ../shared/data/chest_xray
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from pipeline.config import ModelConfig, PreprocessConfig  # noqa: E402
from pipeline.data.dataset import CLASSES  # noqa: E402
from pipeline.data.preprocess import preprocess_file, read_image, to_gray_uint8, to_model_input  # noqa: E402
from pipeline.explain.gradcam import gradcam  # noqa: E402
from pipeline.explain.lime import agreement, explain_lime, side_by_side_figure  # noqa: E402
from pipeline.modeling.backbones import (  # noqa: E402
    build_backbone,
    build_classifier,
    build_head,
    calibrate_batchnorm,
    compile_model,
    conv_layer_name,
    feature_extractor,
)


def pick(folder: Path, count: int, rng: np.random.Generator) -> list[Path]:
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".jpeg", ".jpg", ".png"))
    return [files[i] for i in rng.permutation(len(files))[:count]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data/chest_xray")
    p.add_argument("--per-class", type=int, default=200, help="train films per class for the head")
    p.add_argument("--out", default=str(REPO / "docs" / "explain-example.png"))
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    data, size, rng = Path(a.data_dir), 128, np.random.default_rng(a.seed)
    pre = PreprocessConfig(size)

    paths = [(f, label) for label, cls in enumerate(CLASSES) for f in pick(data / "train" / cls, a.per_class, rng)]
    grays = np.stack([preprocess_file(f, pre) for f, _ in paths])
    labels = np.array([label for _, label in paths])
    base = build_backbone(ModelConfig("mobilenetv2", "none", size), seed=a.seed)
    calibrate_batchnorm(base, to_model_input(grays[rng.permutation(len(grays))[:128]]))
    features = feature_extractor(base).predict(to_model_input(grays), batch_size=32, verbose=0)
    order = rng.permutation(len(grays))
    fit, val = order[: int(0.8 * len(order))], order[int(0.8 * len(order)):]
    head = compile_model(build_head(features.shape[1], 64, 0.2, 1e-4, seed=a.seed), 1e-3)
    head.fit(features[fit], labels[fit], epochs=40, batch_size=32, verbose=0,
             class_weight={0: 0.5 / (1 - labels[fit].mean()), 1: 0.5 / labels[fit].mean()})
    val_auc = roc_auc_score(labels[val], head.predict(features[val], verbose=0).reshape(-1))
    model = build_classifier(base, head)

    film_path = pick(data / "test" / "PNEUMONIA", 1, rng)[0]
    gray = preprocess_file(film_path, pre)
    cam = gradcam(model, to_model_input(gray[None]), conv_layer_name(model))[0]
    lime = explain_lime(model, gray, seed=a.seed)
    agree = agreement(cam, lime.mask)
    original = to_gray_uint8(read_image(film_path))
    title = (f"test/PNEUMONIA/{film_path.name} ({original.shape[1]}x{original.shape[0]} px)\nmodel: MobileNetV2 at "
             f"128 px with RANDOM conv weights; only its head trained, on {len(fit)} real films (val AUC {val_auc:.2f})")
    fig = side_by_side_figure(original, cam, lime.mask, lime.probability, agree, title)
    fig.savefig(a.out, dpi=80)
    print(f"{film_path}: p(pneumonia)={lime.probability:.3f}, agreement {agree:.3f}, "
          f"{int(lime.mask.sum())} px chosen of {len(lime.weights)} superpixels; "
          f"head val AUC {val_auc:.3f}; wrote {a.out}")


if __name__ == "__main__":
    main()
