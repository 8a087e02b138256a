#!/usr/bin/env bash
# Screenshots of the MLflow UI for docs/walkthrough.md, from the runs in mlruns/ (Debian's chromium, headless).
# Usage: docs/screenshots.sh EXPERIMENT MODEL_NAME   (after a search and a retrain-best)
#   SHOTS="model-card" docs/screenshots.sh ...   only those pages (default: all)
#   MLFLOW_DB=/path/mlflow.db docs/screenshots.sh ...   another store (default: mlruns/mlflow.db)
set -euo pipefail
cd "$(dirname "$0")/.."
experiment=${1:-pneumonia-search}
model=${2:-pneumonia-classifier}
db=${MLFLOW_DB:-mlruns/mlflow.db}
shots=${SHOTS:-mlflow-compare mlflow-trial-gradcam mlflow-registry mlflow-experiment model-card}
port=${PORT:-5055}
.venv/bin/mlflow ui --backend-store-uri "sqlite:///$db" --host 127.0.0.1 --port $port >/tmp/mlflow-ui.log 2>&1 &
ui=$!
trap 'kill $ui' EXIT
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done  # minutes on a loaded machine

# Pages to shoot, from what the store holds.
eval "$(.venv/bin/python - "$experiment" "$model" "$db" <<'PY'
import sys, json, urllib.parse, mlflow
mlflow.set_tracking_uri(f"sqlite:///{sys.argv[3]}")
exp = mlflow.get_experiment_by_name(sys.argv[1])
runs = mlflow.search_runs([exp.experiment_id], filter_string="tags.`pipeline.run_type` = 'trial'",
                          order_by=["attributes.start_time DESC"], max_results=8, output_format="list")
ids = json.dumps([r.info.run_id for r in runs])
best = max(runs, key=lambda r: r.data.metrics.get("val_auc", 0))
print(f"exp_id={exp.experiment_id}")
print(f"compare_runs='{urllib.parse.quote(ids)}'")
print(f"best_run={best.info.run_id}")
client = mlflow.MlflowClient()  # the card shown: the champion's, else the newest version's
try:
    card_version = client.get_model_version_by_alias(sys.argv[2], "champion").version
except mlflow.exceptions.MlflowException:
    card_version = max(int(v.version) for v in client.search_model_versions(f"name = '{sys.argv[2]}'"))
print(f"card_version={card_version}")
PY
)"
base="http://127.0.0.1:$port/#"
shoot() {  # name url [window size]
  case " $shots " in *" $1 "*) ;; *) return 0 ;; esac
  chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
    --disable-sync --no-first-run --hide-scrollbars --user-data-dir="$(mktemp -d)" --window-size="${3:-1400,900}" \
    --virtual-time-budget=15000 --screenshot="docs/$1.png" "$2" 2>/dev/null
}
shoot mlflow-compare "$base/compare-runs?runs=$compare_runs&experiments=%5B%22$exp_id%22%5D"
shoot mlflow-trial-gradcam "$base/experiments/$exp_id/runs/$best_run/artifacts/gradcam/val_grid.png"
shoot mlflow-registry "$base/models/$model"
shoot mlflow-experiment "$base/experiments/$exp_id"
# The model card is the version's description (docs/model-card.md).
shoot model-card "$base/models/$model/versions/$card_version" 1400,1000
ls -la docs/*.png
# Keep them small for git: 128-colour palettes.
.venv/bin/python -c "
from PIL import Image; import glob
for f in glob.glob('docs/mlflow-*.png') + glob.glob('docs/model-card.png'):
    Image.open(f).convert('RGB').quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(f, optimize=True)"
