"""Typed settings: validation at the edge, and config -> MLflow params -> config without loss."""
from __future__ import annotations

import argparse
import typing
from dataclasses import fields
from pathlib import Path

import pytest

from pipeline import command_config, config
from pipeline.command_config import (
    DataCheckOptions,
    DownloadOptions,
    EvaluateOptions,
    PredictOptions,
    PretrainOptions,
    PromoteOptions,
    RetrainOptions,
    SearchOptions,
)
from pipeline.config import (
    AugmentConfig,
    ConfigError,
    DataConfig,
    ModelConfig,
    PreprocessConfig,
    PretrainConfig,
    PromoteConfig,
    RetrainConfig,
    SearchConfig,
    check_folder,
    check_model_uri,
    check_storage,
    flat_params,
    from_params,
)
from pipeline.options import add_flags, build, flag_fields, flag_name

CONFIG_CLASSES = (PreprocessConfig, AugmentConfig, DataConfig, ModelConfig, SearchConfig, RetrainConfig, PretrainConfig,
                  PromoteConfig)


def _non_default(tmp_path: Path) -> list:
    """One instance per config class with values other than the defaults, None-able ones both ways."""
    weights = tmp_path / "backbone.weights.h5"
    weights.write_bytes(b"not read by the config")
    return [
        PreprocessConfig(image_size=96, clahe_clip_limit=3.5, clahe_tile_grid=4),
        AugmentConfig(rotation=0.05, shift=0.2, zoom=0.0, shear=0.15, flip=False, brightness=0.1, contrast=0.2),
        DataConfig(data_dir=tmp_path / "chest xray", val_fraction=0.2, min_val_images=0, max_per_class=7, seed=2**32 - 1,
                   cache_dir=tmp_path / "cache"),
        DataConfig(max_per_class=None, seed=0),
        ModelConfig(backbone="mobilenetv2", weights=str(weights), image_size=96),
        ModelConfig(weights="none"),
        SearchConfig(engine="kerastuner", trials=3, epochs=2, batch_size=8, patience=1, metric="val_f1",
                     space=Path("search_spaces/smoke.yaml"), experiment="exp with spaces", storage="sqlite:///x.db",
                     study_name="study-1", augment_views=0, gradcam_images=0, heartbeat=30, imbalance="smote"),
        RetrainConfig(epochs=1, fine_tune_epochs=0, fine_tune_layers="all", fine_tune_lr_factor=0.25,
                      fine_tune_lr=1e-3, batch_size=4, patience=2, threshold_rule="youden", target_sensitivity=0.9,
                      model_name="other-model", gradcam_images=0),
        RetrainConfig(fine_tune_lr=None),
        PretrainConfig(epochs=3, learning_rate=2e-3, warmup_epochs=0, weight_decay=0.0, label_smoothing=0.1, batch_size=8,
                       patience=2, dense_units=16, dropout=0.0, deterministic=False),
        PromoteConfig(margin=0.0, min_sensitivity=0.85),
    ]


OPTION_CLASSES = (DataCheckOptions, SearchOptions, RetrainOptions, PretrainOptions, PromoteOptions, EvaluateOptions,
                  PredictOptions, DownloadOptions)


def _non_default_options(tmp_path: Path) -> list:
    return [DataCheckOptions(json=True), SearchOptions(workers=3), RetrainOptions("exp 2", "abc123", tmp_path / "d"),
            PretrainOptions(tmp_path / "b.weights.h5"), PromoteOptions("other", rollback=True),
            EvaluateOptions("models:/m/3", tmp_path / "films", "ev", 0),
            PredictOptions("models:/m@challenger", tmp_path / "out", "both", 20), DownloadOptions(tmp_path / "x")]


def _argv(cfg) -> list[str]:
    """The command line that asks for `cfg`: a switch only where it differs from the default."""
    argv = []
    for f in flag_fields(type(cfg)):
        value = getattr(cfg, f.name)
        if isinstance(value, bool):
            argv += [flag_name(f)] if value != f.default else []
        elif value is not None:
            argv += [flag_name(f), str(value)]
    return argv


def test_every_config_round_trips_through_its_flags(tmp_path):
    for cfg in _non_default(tmp_path) + _non_default_options(tmp_path):
        cls = type(cfg)
        parser = argparse.ArgumentParser()
        add_flags(parser, cls)
        flagged = {f.name for f in flag_fields(cls)}
        assert flagged, f"{cls.__name__} has no flag"
        fixed = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in flagged}
        back = build(cls, parser.parse_args(_argv(cfg)), **fixed)
        assert back == cfg, cls.__name__
        for f in fields(cfg):
            assert type(getattr(back, f.name)) is type(getattr(cfg, f.name)), (cls.__name__, f.name)
    assert _argv(AugmentConfig(flip=False)) == ["--rotation", "0.03", "--shift", "0.1", "--zoom", "0.1", "--shear",
                                                "0.1", "--no-flip", "--brightness", "0.0", "--contrast", "0.0",
                                                "--crop", "0.0"]


def test_every_flag_has_help_a_readable_type_and_its_default_in_the_help():
    readable = {int, float, str, bool, Path}
    for cls in CONFIG_CLASSES + OPTION_CLASSES:
        hints = typing.get_type_hints(cls)
        parser = argparse.ArgumentParser()
        add_flags(parser, cls)
        actions = {a.dest: a for a in parser._actions}
        for f in flag_fields(cls):
            assert f.metadata["help"].strip(), f"{cls.__name__}.{f.name} has no help"
            options = set(typing.get_args(hints[f.name])) - {type(None)} or {hints[f.name]}
            assert len(options) == 1 and options <= readable, f"{cls.__name__}.{f.name}: {hints[f.name]}"
            shown = f.metadata["default_text"] or f.default
            if not isinstance(f.default, bool) and shown is not None and not f.metadata["required"]:
                assert f"(default: {shown})" in actions[f.name].help, (cls.__name__, f.name)


def test_a_plain_field_is_no_flag_and_only_limits_what_is_added():
    assert "image_size" not in {f.name for f in flag_fields(ModelConfig)}  # --image-size is PreprocessConfig's
    assert [f.name for f in flag_fields(ModelConfig, only=("backbone",))] == ["backbone"]
    with pytest.raises(TypeError, match="image_size"):
        flag_fields(ModelConfig, only=("image_size",))


def test_pretrain_output_must_be_a_weights_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^--output .*b\.h5: Keras saves backbone weights only to a name ending in "
                                          r"\.weights\.h5"):
        PretrainOptions(tmp_path / "b.h5")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"^--output .*a-file is a file, not a folder"):
        PretrainOptions(blocker / "b.weights.h5")


def test_the_champion_the_commands_default_to_is_the_retrained_models():
    assert command_config.CHAMPION == f"models:/{RetrainConfig().model_name}@champion"
    assert PromoteOptions().model_name == RetrainConfig().model_name


def test_retrain_defaults_are_what_validation_chose():
    """README's results: averaging 1, 3 or 5 heads gave the same val AUC (0.985), so one member is the
    default; the test-time views are chosen on val per version (auto), not fixed."""
    assert (RetrainConfig().top_k, RetrainConfig().seeds, RetrainConfig().tta) == (1, 1, "auto")


def test_every_config_round_trips_through_mlflow_params(tmp_path):
    for cfg in _non_default(tmp_path):
        params = flat_params(cfg)
        assert all(isinstance(v, str) for v in params.values())
        back = from_params(type(cfg), params)
        assert back == cfg, type(cfg).__name__
        for f in fields(cfg):  # equal *and* the same types: 0.001 must not come back as "0.001"
            assert type(getattr(back, f.name)) is type(getattr(cfg, f.name)), (type(cfg).__name__, f.name)


def test_every_config_field_has_a_type_from_params_can_read():
    readable = {int, float, str, bool, Path}
    for cls in CONFIG_CLASSES:
        for name, kind in typing.get_type_hints(cls).items():
            options = set(typing.get_args(kind)) - {type(None)} or {kind}
            assert len(options) == 1 and options <= readable, f"{cls.__name__}.{name}: {kind}"


def test_from_params_names_a_param_it_cannot_read():
    with pytest.raises(ConfigError, match=r"^fine_tune_lr='fast' \(a logged run param\) is invalid: expected float$"):
        from_params(RetrainConfig, {"fine_tune_lr": "fast"})


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_seed_outside_what_numpy_takes_is_refused(seed):
    with pytest.raises(ConfigError, match=rf"^seed={seed!r} is invalid: expected a whole number from 0 to 4294967295"):
        DataConfig(seed=seed)


def test_seed_has_one_home():
    """DataConfig's seed seeds the split and, through the search, every trial: no second copy to drift."""
    homes = [cls.__name__ for cls in CONFIG_CLASSES if "seed" in {f.name for f in fields(cls)}]
    assert homes == ["DataConfig"]


def test_folder_checks_name_the_file_in_the_way(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert check_folder(tmp_path / "new" / "deeper", "--output") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists(), "a check must not create anything"
    with pytest.raises(ConfigError, match=rf"^--output {blocker} is a file, not a folder: remove it or choose another --output$"):
        check_folder(blocker, "--output")
    with pytest.raises(ConfigError, match=rf"^--cache-dir {blocker / 'sub'} cannot be made because {blocker} is a file"):
        DataConfig(cache_dir=blocker / "sub")


@pytest.mark.parametrize("url, message", [
    ("notaurl", r"storage='notaurl' is not a database URL: expected e\.g\. sqlite:///"),
    ("mysqlx://h/db", r"storage='mysqlx://h/db' names an unknown database kind 'mysqlx'"),
    ("postgresql+nodriver://h/db", r"storage='postgresql\+nodriver://h/db' names an unknown database kind 'postgresql\+nodriver'"),
])
def test_storage_url_is_parsed_before_any_work(url, message):
    with pytest.raises(ConfigError, match="^" + message):
        SearchConfig(storage=url)


def test_storage_sqlite_folder_must_be_makeable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    check_storage(f"sqlite:///{tmp_path}/not/yet/optuna.db")  # the search makes the folder
    with pytest.raises(ConfigError, match=rf"^the folder of --storage {blocker} is a file"):
        check_storage(f"sqlite:///{blocker}/optuna.db")


@pytest.mark.parametrize("uri", ["models:/pneumonia-classifier@champion", "models:/m/3", "models:/m@previous-champion"])
def test_registry_uris_pass(uri):
    assert check_model_uri(uri) == uri


@pytest.mark.parametrize("uri", ["pneumonia-classifier", "models:/m", "models:/m@", "models:/m/0", "models:/m/x",
                                 "runs:/abc/model", "models:/a b@champion"])
def test_other_model_uris_are_refused_naming_the_form(uri):
    with pytest.raises(ConfigError, match=rf"^model={uri!r} is invalid: expected models:/NAME@ALIAS"):
        check_model_uri(uri)


def test_seed_limit_is_numpys():
    import numpy as np

    np.random.default_rng(config.SEED_MAX)
    with pytest.raises(ValueError):
        np.random.RandomState(config.SEED_MAX + 1)
