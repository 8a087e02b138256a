"""Input throughput (images/s) for decode + CLAHE + resize + augmentation over several epochs.

  seeds:        ImageDataGenerator.flow_from_dataframe: every epoch decodes (PIL) each JPEG again, applies
                CLAHE + resize and a random scipy affine transform, one image at a time;
  project cold: pipeline.data.preprocess.load_images into an empty cache (decode + CLAHE + resize once, threaded),
                then pipeline.data.augment.image_dataset with augmentation, iterated once per epoch;
  project warm: the same, with load_images reading the cache the cold run wrote.
Every side delivers the same batches: (batch, size, size, 3) float32 pixels of the same images, augmented.
"""
from __future__ import annotations

import time

import common  # noqa: F401  (sets up paths and quiets TensorFlow first)

from pipeline.data.augment import image_dataset
from pipeline.data.preprocess import load_images


def seeds_epochs(manifest, aug_cfg, pre_cfg, batch_size: int, epochs: int, seed: int) -> float:
    flow = common.seeds_flow(manifest, aug_cfg, pre_cfg, batch_size, shuffle=True, seed=seed)
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(len(flow)):
            flow[i]
        flow.on_epoch_end()  # reshuffle, as fit() does
    return time.perf_counter() - start


def project_epochs(manifest, aug_cfg, pre_cfg, batch_size: int, epochs: int, seed: int, cache_dir) -> dict:
    t: dict = {}
    with common.timed(t, "load"):
        images, _ = load_images(manifest, pre_cfg, cache_dir, progress=False)
    labels = manifest["label"].to_numpy()
    with common.timed(t, "augment"):
        ds = image_dataset(images, labels, batch_size, augment=aug_cfg, shuffle=True, seed=seed)
        for _ in range(epochs):
            for _batch in ds:
                pass
    return t


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], per_class=200)
    p.add_argument("--epochs", type=int, default=3, help="passes over the images (augmentation differs each pass)")
    p.add_argument("--batch-size", type=int, default=32)
    a = p.parse_args()
    common.header("input pipeline: ImageDataGenerator per epoch  vs  decode/CLAHE cache + tf.data augmentation", a,
                  seeds_generator=common.SEEDS_GENERATOR_NAME)
    data_cfg, pre_cfg, _, aug_cfg = common.configs(a)
    manifest = common.subset(data_cfg, splits=("train",))
    n = len(manifest) * a.epochs
    print(f"  {len(manifest)} train images x {a.epochs} epochs = {n} augmented images per side", flush=True)

    seeds_s = seeds_epochs(manifest, aug_cfg, pre_cfg, a.batch_size, a.epochs, a.seed)
    cache = common.tempdir("bench-images-")
    cold = project_epochs(manifest, aug_cfg, pre_cfg, a.batch_size, a.epochs, a.seed, cache)
    warm = project_epochs(manifest, aug_cfg, pre_cfg, a.batch_size, a.epochs, a.seed, cache)

    rows = [{"side": "seeds: ImageDataGenerator", "decode+CLAHE s": "-", "augment s": "-",
             "total s": seeds_s, "img/s": n / seeds_s, "vs seeds": "1.0x"}]
    for name, t in (("project cold (empty cache)", cold), ("project warm (cache hit)", warm)):
        total = t["load"] + t["augment"]
        rows.append({"side": name, "decode+CLAHE s": t["load"], "augment s": t["augment"], "total s": total,
                     "img/s": n / total, "vs seeds": common.ratio(seeds_s, total)})
    common.table(rows, "throughput over all epochs (seeds decode + CLAHE inside every epoch, so no split)")
    print(f"\nproject decode + CLAHE + resize alone: {len(manifest) / cold['load']:.0f} img/s cold, "
          f"{len(manifest) / warm['load']:.0f} img/s from the cache; augmentation alone: "
          f"{n / warm['augment']:.0f} img/s")
    print(f"RATIO project/seeds img/s: cold {seeds_s / (cold['load'] + cold['augment']):.1f}x, "
          f"warm {seeds_s / (warm['load'] + warm['augment']):.1f}x")


if __name__ == "__main__":
    main()
