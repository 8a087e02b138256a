"""Search-space YAML: the shipped files load; every mistake names the file and the key."""
from __future__ import annotations

import pytest

from pipeline.config import ConfigError
from pipeline.search.space import PARAMS, load_space
from tests.helpers import REPO

VALID = {
    "dense_units": "type: choice\n  values: [64, 128]",
    "dropout": "type: float\n  low: 0.1\n  high: 0.5",
    "l2": "type: float\n  low: 1.0e-6\n  high: 1.0e-2\n  log: true",
    "learning_rate": "type: float\n  low: 1.0e-4\n  high: 1.0e-2\n  log: true",
}


def _write(tmp_path, **params) -> str:
    """A space with VALID params, some replaced (a value of None drops the key)."""
    merged = {**VALID, **params}
    text = "".join(f"{name}:\n  {spec}\n" for name, spec in merged.items() if spec is not None)
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["default.yaml", "smoke.yaml"])
def test_shipped_spaces_load(name):
    space = load_space(REPO / "search_spaces" / name)
    assert tuple(p.name for p in space.params) == PARAMS
    kinds = {p.name: p for p in space.params}
    assert kinds["dense_units"].kind == "choice" and all(isinstance(v, int) for v in kinds["dense_units"].values)
    assert kinds["learning_rate"].log and 0 < kinds["learning_rate"].low < kinds["learning_rate"].high


def test_valid_space_values(tmp_path):
    space = load_space(_write(tmp_path))
    params = {p.name: p for p in space.params}
    assert params["dense_units"].values == (64, 128)
    assert (params["dropout"].low, params["dropout"].high, params["dropout"].log) == (0.1, 0.5, False)
    assert params["l2"].log is True


def test_optuna_samples_inside_the_space(tmp_path):
    import optuna  # pinned: a broken install must fail here, not skip
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(_write(tmp_path))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        values = space.suggest_optuna(study.ask())
        assert set(values) == set(PARAMS)
        assert values["dense_units"] in (64, 128)
        assert 0.1 <= values["dropout"] <= 0.5 and 1e-4 <= values["learning_rate"] <= 1e-2


@pytest.mark.parametrize("params, key, words", [
    ({"dropout": "type: float\n  low: 0.5\n  high: 0.5"}, "dropout", "low < high"),
    ({"dropout": "type: float\n  low: 0.6\n  high: 0.2"}, "dropout", "low < high"),
    ({"l2": "type: float\n  low: 0.0\n  high: 1.0e-2\n  log: true"}, "l2.low", "log"),
    ({"dense_units": "type: choice\n  values: 64"}, "dense_units.values", "list"),
    ({"dense_units": "type: choice\n  values: []"}, "dense_units.values", "list"),
    ({"dense_units": "type: choice\n  values: [64, 12.5]"}, "dense_units.values", "12.5"),
    ({"dense_units": "type: float\n  low: 16\n  high: 64"}, "dense_units.type", "choice"),
    ({"dropout": "type: int\n  low: 0.1\n  high: 0.5"}, "dropout.type", "'int'"),
    ({"dropout": "type: float\n  low: abc\n  high: 0.5"}, "dropout.low", "number"),
    ({"dropout": "type: float\n  low: 0.1\n  high: 0.5\n  log: maybe"}, "dropout.log", "true or false"),
    ({"dropout": "type: float\n  low: 0.1\n  high: 0.5\n  step: 0.1"}, "dropout", "step"),
    ({"dropout": "type: float\n  high: 0.5"}, "dropout", "missing 'low'"),
    ({"dropout": "0.3"}, "dropout", "mapping"),
    ({"learning_rate": "type: float\n  low: 1.0e-4\n  high: 5.0"}, "learning_rate", "high"),
])
def test_bad_param_names_file_and_key(tmp_path, params, key, words):
    path = _write(tmp_path, **params)
    with pytest.raises(ConfigError) as err:
        load_space(path)
    message = str(err.value)
    assert str(path) in message and key in message and words in message


def test_unknown_top_level_key(tmp_path):
    path = _write(tmp_path, batch_size="type: choice\n  values: [16, 32]")
    with pytest.raises(ConfigError, match="unknown.*batch_size") as err:
        load_space(path)
    assert str(path) in str(err.value)


def test_missing_top_level_key(tmp_path):
    path = _write(tmp_path, l2=None)
    with pytest.raises(ConfigError, match="missing.*l2") as err:
        load_space(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("text, words", [("- a\n- b\n", "expected a mapping"), ("dropout: [unclosed\n", "YAML"),
                                         ("", "expected a mapping")])
def test_not_a_mapping_or_not_yaml(tmp_path, text, words):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words) as err:
        load_space(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_space(tmp_path / "nope.yaml")


@pytest.mark.slow
def test_keras_tuner_hyperparameters(tmp_path):
    import keras_tuner  # pinned: a broken install must fail here, not skip

    hp = load_space(_write(tmp_path)).kerastuner_hyperparameters()
    assert isinstance(hp, keras_tuner.HyperParameters) and set(hp.values) == set(PARAMS)
    assert hp.values["dense_units"] in (64, 128) and 0.1 <= hp.values["dropout"] <= 0.5


@pytest.mark.parametrize("text, first_line", [
    ("dropout: {type: float, low: 0.1\nl2: 2\n", "not valid YAML at line 2 column 3: expected ',' or '}', but got ':'"),
    ("dropout:\n\t- x\n", "not valid YAML at line 2 column 1: found character '\\t' that cannot start any token"),
    ("dropout: a: b\n", "not valid YAML at line 1 column 11: mapping values are not allowed here"),
])
def test_malformed_yaml_is_one_summary_line_then_pyyaml_detail(tmp_path, text, first_line):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_space(path)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{path}: {first_line}"
    assert len(lines) > 1 and all(line.startswith("  ") for line in lines[1:])
    assert f'in "{path}", line' in str(err.value)


def test_binary_file_as_space_is_one_error(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n\xff\xfe\x00\x01")
    with pytest.raises(ConfigError, match=rf"^{path}: not valid YAML: "):
        load_space(path)
