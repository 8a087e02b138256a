# Front door of the pipeline. Every target bootstraps .venv on first use.
# Override any variable on the command line, e.g. `make search ENGINE=kerastuner TRIALS=20 WEIGHTS=none`.

# Variables that are not flags of `python -m pipeline`: their defaults live here.
# the Python that makes .venv
PYTHON        ?= python3
# the virtual environment every target uses
VENV          ?= .venv
PY            := $(VENV)/bin/python
# make postgres: the database folder
PG_DIR        ?= .pg
# make postgres: its port on 127.0.0.1
PG_PORT       ?= 5433
# make server: the MLflow backend store
BACKEND_STORE ?= sqlite:///mlruns/mlflow.db
# make server: the artifact folder
ARTIFACTS     ?= mlruns/artifacts
# make server: its port on 127.0.0.1
SERVER_PORT   ?= 5050
# make ui: its port on 127.0.0.1
UI_PORT       ?= 5000
# make serve: the REST server's port on 127.0.0.1
SERVE_PORT    ?= 5001
# make predict: image files, folders or globs (required)
IMAGES        ?=
# search, pretrain: extra flags as written, e.g. "--brightness 0.1"
AUGMENT       ?=
# test, test-fast: extra pytest arguments
PYTEST_ARGS   ?=
# make recipe (weights none, docs/results.md): the input size of all three steps
RECIPE_SIZE   ?= 192
# make recipe: the training augmentation (pretrain, and retrain-best through the search's params)
RECIPE_AUGMENT ?= --crop 0.7 --zoom 0 --shift 0.05 --brightness 0.1 --contrast 0.1
# make recipe: pretrain's epochs and patience
RECIPE_PRETRAIN ?= --epochs 14 --patience 5
# make recipe: search trials x epochs
RECIPE_SEARCH ?= --trials 20 --epochs 15
# make recipe: retrain-best's ensemble and schedule (head 2 epochs, then every layer at 1e-4)
RECIPE_RETRAIN ?= --top-k 3 --epochs 2 --fine-tune-epochs 2 --fine-tune-layers all --fine-tune-lr 0.0001 --patience 2
# make recipe: the MLflow experiment of its search and retrain
RECIPE_EXPERIMENT ?= recipe-$(RECIPE_SIZE)
# Every other variable (DATA_DIR, TRIALS, BACKBONE, ...) is passed on as its flag only when you set it, so
# each default lives once, in pipeline/config.py; docs/cli.md (make docs) lists each variable, its flag
# and that default.

# Private by default, also for `mlflow ui` / `mlflow server` / `mlflow models serve`, which run outside the
# package: no MLflow usage telemetry unless you set MLFLOW_DISABLE_TELEMETRY to false yourself; Keras and
# matplotlib keep their config and caches under .cache/ instead of ~/.keras and ~/.cache (docs/troubleshooting.md: Privacy).
export MLFLOW_DISABLE_TELEMETRY ?= true
export KERAS_HOME ?= $(CURDIR)/.cache/keras
export MPLCONFIGDIR ?= $(CURDIR)/.cache/matplotlib

optional = $(if $(strip $(2)),$(1) $(2))
DATA_FLAGS   = $(call optional,--data-dir,$(DATA_DIR)) $(call optional,--image-size,$(IMAGE_SIZE)) \
               $(call optional,--max-per-class,$(MAX_PER_CLASS)) $(call optional,--seed,$(SEED))
SEARCH_FLAGS = $(DATA_FLAGS) $(call optional,--engine,$(ENGINE)) $(call optional,--trials,$(TRIALS)) \
               $(call optional,--epochs,$(EPOCHS)) $(call optional,--backbone,$(BACKBONE)) \
               $(call optional,--weights,$(WEIGHTS)) $(call optional,--space,$(SPACE)) \
               $(call optional,--experiment,$(EXPERIMENT)) $(call optional,--study-name,$(STUDY_NAME)) \
               $(call optional,--storage,$(STORAGE)) $(call optional,--workers,$(WORKERS)) \
               $(call optional,--heartbeat,$(HEARTBEAT)) $(AUGMENT)
RETRAIN_FLAGS = $(call optional,--experiment,$(EXPERIMENT)) $(call optional,--epochs,$(EPOCHS)) \
               $(call optional,--fine-tune-epochs,$(FT_EPOCHS)) $(call optional,--fine-tune-layers,$(FT_LAYERS)) \
               $(call optional,--fine-tune-lr-factor,$(FT_LR_FACTOR)) $(call optional,--fine-tune-lr,$(FT_LR)) \
               $(call optional,--patience,$(PATIENCE)) $(call optional,--model-name,$(MODEL_NAME)) \
               $(call optional,--lime-images,$(LIME_IMAGES)) $(call optional,--search-run-id,$(SEARCH_RUN_ID)) \
               $(call optional,--data-dir,$(DATA_DIR)) $(call optional,--top-k,$(TOP_K)) \
               $(call optional,--seeds,$(SEEDS)) $(call optional,--tta,$(TTA))
# MODEL wins; else MODEL_NAME's champion; else the CLI's default model
MODEL_FLAG   = $(call optional,--model,$(or $(MODEL),$(if $(MODEL_NAME),models:/$(MODEL_NAME)@champion)))

.PHONY: help venv test test-fast test-all data data-check pretrain recipe search ui retrain-best promote rollback predict serve evaluate demo bench docs clean postgres postgres-stop server

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
	$(PY) -m pipeline download $(call optional,--data-dir,$(DATA_DIR))
	$(PY) -m pipeline data-check $(call optional,--data-dir,$(DATA_DIR))

data-check: $(VENV)/.installed ## count, validate and fingerprint DATA_DIR
	$(PY) -m pipeline data-check $(DATA_FLAGS)

search: $(VENV)/.installed ## hyperparameter search (ENGINE=optuna|kerastuner), every trial in MLflow
	$(PY) -m pipeline search $(SEARCH_FLAGS)

pretrain: $(VENV)/.installed ## offline path: train BACKBONE from scratch on train, save it for WEIGHTS=pretrained/... (an hour+)
	$(PY) -m pipeline pretrain $(DATA_FLAGS) $(call optional,--backbone,$(BACKBONE)) \
		$(call optional,--epochs,$(PRETRAIN_EPOCHS)) $(AUGMENT)

recipe: $(VENV)/.installed ## weights=none end to end, the recipe docs/results.md measured: pretrain, search on its file, retrain-best of the top 3 (68 min measured at 192 px, 2 cores)
	$(PY) -m pipeline pretrain $(call optional,--data-dir,$(DATA_DIR)) --image-size $(RECIPE_SIZE) $(RECIPE_PRETRAIN) \
		$(RECIPE_AUGMENT)
	$(PY) -m pipeline search $(call optional,--data-dir,$(DATA_DIR)) --backbone mobilenetv2 --image-size $(RECIPE_SIZE) \
		--weights "$$(ls -t pretrained/mobilenetv2-$(RECIPE_SIZE)px-*.weights.h5 | head -1)" \
		--experiment $(RECIPE_EXPERIMENT) $(RECIPE_SEARCH) $(RECIPE_AUGMENT)
	$(PY) -m pipeline retrain-best --experiment $(RECIPE_EXPERIMENT) $(RECIPE_RETRAIN)

postgres: $(VENV)/.installed ## local PostgreSQL in PG_DIR on 127.0.0.1:PG_PORT (apt-get installs it if missing); prints STORAGE
	$(PY) -m pipeline.infra.servers postgres --dir $(PG_DIR) --port $(PG_PORT)

postgres-stop: $(VENV)/.installed ## stop the PostgreSQL of make postgres
	$(PY) -m pipeline.infra.servers postgres --dir $(PG_DIR) --stop

server: $(VENV)/.installed ## mlflow server on 127.0.0.1:SERVER_PORT (BACKEND_STORE, ARTIFACTS) for workers on several machines
	$(PY) -m pipeline.infra.servers mlflow --backend-store $(BACKEND_STORE) --artifacts $(ARTIFACTS) --port $(SERVER_PORT)

ui: $(VENV)/.installed ## MLflow UI on http://127.0.0.1:$(UI_PORT)
	$(VENV)/bin/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlruns/mlflow.db} --host 127.0.0.1 --port $(UI_PORT)

retrain-best: $(VENV)/.installed ## fine-tune the best trial, evaluate on test, register a challenger
	$(PY) -m pipeline retrain-best $(RETRAIN_FLAGS)

promote: $(VENV)/.installed ## make the challenger champion if it passes the criteria (exit 0 promoted, 3 kept)
	$(PY) -m pipeline promote $(call optional,--model-name,$(MODEL_NAME))

rollback: $(VENV)/.installed ## champion back to previous-champion
	$(PY) -m pipeline promote $(call optional,--model-name,$(MODEL_NAME)) --rollback

predict: $(VENV)/.installed ## classify IMAGES="a.jpeg dir/ 'glob/*.png'" with MODEL (default: the champion)
	@test -n "$(IMAGES)" || { echo 'usage: make predict IMAGES="path/a.jpeg folder/ path/*.png" [MODEL=models:/NAME@ALIAS]'; exit 2; }
	$(PY) -m pipeline predict $(MODEL_FLAG) $(call optional,--output,$(OUTPUT)) $(call optional,--explain,$(EXPLAIN)) \
		$(IMAGES)

evaluate: $(VENV)/.installed ## evaluate MODEL on DATA_DIR (NORMAL/ + PNEUMONIA/, or a root with test/); tags the version
	$(PY) -m pipeline evaluate $(MODEL_FLAG) --data-dir $(or $(DATA_DIR),$$($(PY) -m pipeline.cli_docs --default data-check --data-dir))

serve: $(VENV)/.installed ## check MODEL (default: the champion), then serve it on http://127.0.0.1:$(SERVE_PORT)/invocations
	DO_NOT_TRACK=true $(PY) -m pipeline serve $(MODEL_FLAG) --host 127.0.0.1 --port $(SERVE_PORT)

demo: $(VENV)/.installed ## every step on a generated SYNTHETIC data set (minutes on 2 CPU cores)
	$(PY) -m pipeline.demo

bench: $(VENV)/.installed ## speed benchmarks on DATA_DIR (see benchmarks/)
	$(PY) benchmarks/run_all.py $(call optional,--data-dir,$(DATA_DIR))

docs: $(VENV)/.installed ## regenerate docs/cli.md (every command, flag, default and Make variable) from the parser
	$(PY) -m pipeline.cli_docs > docs/cli.md

clean: ## remove caches (keeps mlruns/, data/ and pretrained/)
	rm -rf .cache .pytest_cache outputs
