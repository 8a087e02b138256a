# Front door of the pipeline. Every target bootstraps .venv on first use.
# Override any variable on the command line, e.g. `make search ENGINE=kerastuner TRIALS=20 WEIGHTS=none`.

PYTHON        ?= python3
VENV          ?= .venv
PY            := $(VENV)/bin/python
DATA_DIR      ?= data/chest_xray
ENGINE        ?= optuna
TRIALS        ?= 10
EPOCHS        ?= 10
BACKBONE      ?= resnet50
WEIGHTS       ?= imagenet
IMAGE_SIZE    ?= 224
MAX_PER_CLASS ?=
SPACE         ?= search_spaces/default.yaml
EXPERIMENT    ?= pneumonia-search
STUDY_NAME    ?=
STORAGE       ?=
WORKERS       ?= 1
HEARTBEAT     ?= 10
PG_DIR        ?= .pg
PG_PORT       ?= 5433
BACKEND_STORE ?= sqlite:///mlruns/mlflow.db
ARTIFACTS     ?= mlruns/artifacts
SERVER_PORT   ?= 5050
SEARCH_RUN_ID ?=
PRETRAIN_EPOCHS ?= 20
AUGMENT       ?=
FT_EPOCHS     ?= 10
FT_LAYERS     ?= 30
FT_LR_FACTOR  ?= 0.1
FT_LR         ?=
PATIENCE      ?= 4
MODEL_NAME    ?= pneumonia-classifier
MODEL         ?= models:/$(MODEL_NAME)@champion
IMAGES        ?=
OUTPUT        ?= outputs/predictions
EXPLAIN       ?= gradcam
LIME_IMAGES   ?= 0
UI_PORT       ?= 5000
SERVE_PORT    ?= 5001
PYTEST_ARGS   ?=

# Private by default, also for `mlflow ui` / `mlflow server` / `mlflow models serve`, which run outside the
# package: no MLflow usage telemetry unless you set MLFLOW_DISABLE_TELEMETRY to false yourself; Keras and
# matplotlib keep their config and caches under .cache/ instead of ~/.keras and ~/.cache (README: Privacy).
export MLFLOW_DISABLE_TELEMETRY ?= true
export KERAS_HOME ?= $(CURDIR)/.cache/keras
export MPLCONFIGDIR ?= $(CURDIR)/.cache/matplotlib

optional = $(if $(strip $(2)),$(1) $(2))
DATA_FLAGS   = --data-dir $(DATA_DIR) --image-size $(IMAGE_SIZE) $(call optional,--max-per-class,$(MAX_PER_CLASS))
SEARCH_FLAGS = $(DATA_FLAGS) --engine $(ENGINE) --trials $(TRIALS) --epochs $(EPOCHS) --backbone $(BACKBONE) \
               --weights $(WEIGHTS) --space $(SPACE) --experiment $(EXPERIMENT) \
               $(call optional,--study-name,$(STUDY_NAME)) $(call optional,--storage,$(STORAGE)) \
               --workers $(WORKERS) --heartbeat $(HEARTBEAT) $(AUGMENT)

.PHONY: help venv test test-fast test-all data data-check pretrain search ui retrain-best promote rollback predict serve evaluate demo bench clean postgres postgres-stop server

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed ## create .venv with the pinned requirements and this package (editable; console script: pneumonia)

test-fast: $(VENV)/.installed ## unit tests only: no training, no servers (under 2 minutes)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test: $(VENV)/.installed ## run the test suite (integration tests use ../shared/data/chest_xray when present)
	$(PY) -m pytest $(PYTEST_ARGS)

data: $(VENV)/.installed ## download the Kaggle chest X-ray set into DATA_DIR and check it
	$(PY) -m pipeline download --data-dir $(DATA_DIR)
	$(PY) -m pipeline data-check --data-dir $(DATA_DIR)

data-check: $(VENV)/.installed ## count, validate and fingerprint DATA_DIR
	$(PY) -m pipeline data-check $(DATA_FLAGS)

search: $(VENV)/.installed ## hyperparameter search (ENGINE=optuna|kerastuner), every trial in MLflow
	$(PY) -m pipeline search $(SEARCH_FLAGS)

pretrain: $(VENV)/.installed ## offline path: train BACKBONE from scratch on train, save it for WEIGHTS=pretrained/... (an hour+)
	$(PY) -m pipeline pretrain $(DATA_FLAGS) --backbone $(BACKBONE) --epochs $(PRETRAIN_EPOCHS) $(AUGMENT)

postgres: $(VENV)/.installed ## local PostgreSQL in PG_DIR on 127.0.0.1:PG_PORT (apt-get installs it if missing); prints STORAGE
	$(PY) -m pipeline.infra.servers postgres --dir $(PG_DIR) --port $(PG_PORT)

postgres-stop: $(VENV)/.installed ## stop the PostgreSQL of make postgres
	$(PY) -m pipeline.infra.servers postgres --dir $(PG_DIR) --stop

server: $(VENV)/.installed ## mlflow server on 127.0.0.1:SERVER_PORT (BACKEND_STORE, ARTIFACTS) for workers on several machines
	$(PY) -m pipeline.infra.servers mlflow --backend-store $(BACKEND_STORE) --artifacts $(ARTIFACTS) --port $(SERVER_PORT)

ui: $(VENV)/.installed ## MLflow UI on http://127.0.0.1:$(UI_PORT)
	$(VENV)/bin/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlruns/mlflow.db} --host 127.0.0.1 --port $(UI_PORT)

retrain-best: $(VENV)/.installed ## fine-tune the best trial, evaluate on test, register a challenger
	$(PY) -m pipeline retrain-best --experiment $(EXPERIMENT) --epochs $(EPOCHS) --fine-tune-epochs $(FT_EPOCHS) \
		--fine-tune-layers $(FT_LAYERS) --fine-tune-lr-factor $(FT_LR_FACTOR) $(call optional,--fine-tune-lr,$(FT_LR)) --patience $(PATIENCE) \
		--model-name $(MODEL_NAME) --lime-images $(LIME_IMAGES) $(call optional,--search-run-id,$(SEARCH_RUN_ID)) \
		$(if $(filter command line environment,$(origin DATA_DIR)),--data-dir $(DATA_DIR))

promote: $(VENV)/.installed ## make the challenger champion if it passes the criteria (exit 0 promoted, 3 kept)
	$(PY) -m pipeline promote --model-name $(MODEL_NAME)

rollback: $(VENV)/.installed ## champion back to previous-champion
	$(PY) -m pipeline promote --model-name $(MODEL_NAME) --rollback

predict: $(VENV)/.installed ## classify IMAGES="a.jpeg dir/ 'glob/*.png'" with MODEL (default: the champion)
	@test -n "$(IMAGES)" || { echo 'usage: make predict IMAGES="path/a.jpeg folder/ path/*.png" [MODEL=models:/NAME@ALIAS]'; exit 2; }
	$(PY) -m pipeline predict --model $(MODEL) --output $(OUTPUT) --explain $(EXPLAIN) $(IMAGES)

evaluate: $(VENV)/.installed ## evaluate MODEL on DATA_DIR (NORMAL/ + PNEUMONIA/, or a root with test/); tags the version
	$(PY) -m pipeline evaluate --model $(MODEL) --data-dir $(DATA_DIR)

serve: $(VENV)/.installed ## REST server for MODEL (default: the champion) on http://127.0.0.1:$(SERVE_PORT)/invocations
	DO_NOT_TRACK=true $(PY) -m pipeline serve --model $(MODEL) --host 127.0.0.1 --port $(SERVE_PORT)

demo: $(VENV)/.installed ## every step on a generated SYNTHETIC data set (minutes on 2 CPU cores)
	$(PY) -m pipeline.demo

bench: $(VENV)/.installed ## speed benchmarks on DATA_DIR (see benchmarks/)
	$(PY) benchmarks/run_all.py --data-dir $(DATA_DIR)

clean: ## remove caches (keeps mlruns/, data/ and pretrained/)
	rm -rf .cache .pytest_cache outputs
