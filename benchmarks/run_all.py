"""Runs every benchmark with its defaults, one after another (each in its own process), and prints all figures."""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The speed benchmarks: each needs only --data-dir. benchmarks/README.md lists them from this tuple (a test checks).
SCRIPTS = ("search_cost.py", "search_limit.py", "head_training.py", "train_speed.py", "input_pipeline.py",
           "gradcam_overhead.py", "scaling.py", "explain_cost.py")
# Not run here: they need a registered model (--model), a pretrained backbone to mean anything, or no data at all.
ON_REQUEST = ("threshold_rules.py", "ood_guard.py", "imbalance.py", "ensemble_heads.py", "augment_views.py",
              "workers.py", "sanity_cost.py", "dicom_read.py", "promotion_noise.py")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", default="data/chest_xray", help="dataset root with train/ and test/")
    a = p.parse_args()
    took, failed = {}, []
    for name in SCRIPTS:
        print(f"\n{'#' * 100}\n# {name}\n{'#' * 100}", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(HERE / name), "--data-dir", a.data_dir])
        took[name] = time.perf_counter() - start
        if rc:
            failed.append(name)
    print("\nbenchmark wall times: " + ", ".join(f"{n} {s:.0f} s" for n, s in took.items()))
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
