import pytest

from tarn.config import load_params, params_from_dict
from tarn.errors import ConfigError
from tests.support.project import REPO, repo_params_dict


def test_repo_params_validate():
    p = load_params(REPO / "params.yaml")
    assert p.schema.target.name == "income"
    assert p.schema.sensitive == ["sex", "race"]
    assert "education_num" in p.schema.feature_names


@pytest.mark.parametrize(
    ("path", "value", "expect"),
    [
        (("etl", "chunk_rows"), 0, "etl.chunk_rows"),
        (("etl", "chunk_size"), 10, "etl.chunk_size"),  # a typo is an error, not ignored
        (("prepare", "valid_fraction"), 1.5, "prepare.valid_fraction"),
        (("bias", "reweighing_features"), ["nope"], "bias.reweighing_features"),
        (("schema", "sensitive"), ["nope"], "sensitive"),
    ],
)
def test_bad_params_name_the_key(path, value, expect):
    raw = repo_params_dict()
    raw[path[0]][path[1]] = value
    with pytest.raises(ConfigError) as e:
        params_from_dict(raw)
    assert expect in str(e.value)


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize(("space", "expect"), [
    ({"learning_rat": {"dist": "uniform", "low": 0.1, "high": 0.2}}, "unknown hyperparameter"),
    ({"learning_rate": {"dist": "uniform", "low": 0.3, "high": 0.2}}, "low < high"),
    ({"reg_alpha": {"dist": "loguniform", "low": 0, "high": 1}}, "low > 0"),
    ({"max_depth": {"dist": "quniform", "low": 2, "high": 8}}, "q > 0"),
    ({}, "empty"),
])
def test_bad_search_space_fails_before_any_run(space, expect):
    raw = repo_params_dict()
    raw["tune"]["space"] = space
    with pytest.raises(ConfigError, match=expect) as e:
        params_from_dict(raw)
    assert "tune.space" in str(e.value)


def test_tracking_uri_from_environment_overrides_params(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    p = load_params(tmp_path / "params.yaml", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    assert p.mlflow.tracking_uri == "http://127.0.0.1:5000"
    assert load_params(tmp_path / "params.yaml", env={}).mlflow.tracking_uri == ""


def test_dask_scheduler_address_from_environment_overrides_params(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    env = {"DASK_SCHEDULER_ADDRESS": "tcp://127.0.0.1:8786"}
    assert load_params(tmp_path / "params.yaml", env=env).compute.scheduler == env[
        "DASK_SCHEDULER_ADDRESS"]
    assert load_params(tmp_path / "params.yaml", env={}).compute.scheduler == ""


def _error(mutate) -> ConfigError:
    raw = repo_params_dict()
    mutate(raw)
    with pytest.raises(ConfigError) as e:
        params_from_dict(raw, source="params.yaml")
    return e.value


def test_a_misspelled_section_is_named_with_a_suggestion():
    e = _error(lambda r: r.__setitem__("moniter", {"min_rows": 5}))
    assert e.message == "params.yaml: moniter: unknown key"
    assert "did you mean 'monitor'?" in e.hint


def test_a_misspelled_nested_key_lists_the_known_ones():
    e = _error(lambda r: r["schema"]["columns"][0].__setitem__("dtyp", "int"))
    assert "schema.columns.0.dtyp: unknown key" in e.message
    assert "'dtype'" in e.hint and "nullable" in e.hint


@pytest.mark.parametrize(("key", "value"), [("num_method", "wassersten"),
                                            ("cat_method", "chi2")])
def test_method_names_are_a_closed_set(key, value):
    e = _error(lambda r: r["monitor"].__setitem__(key, value))
    assert f"monitor.{key}: {value!r} is not allowed" in e.message
    assert "use one of" in e.hint and ("'wasserstein'" in e.hint or "'chisquare'" in e.hint)


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda r: r["monitor"].__setitem__("drift_share_full", 0.1),
     "monitor.drift_share_full (0.1) is below monitor.drift_share_incremental"),
    (lambda r: r["monitor"].__setitem__("logloss_increase_full", 0.01),
     "monitor.logloss_increase_full (0.01) is below"),
    (lambda r: r["bias"]["privileged"].__setitem__("sex", "Man"),
     "bias.privileged.sex: 'Man' is not a category of 'sex'"),
    (lambda r: r["schema"]["target"].__setitem__("mapping", {">50K": 1, ">50K.": 1}),
     "one class only"),
    (lambda r: r["bias"].__setitem__("reweighing_features", []),
     "bias.reweighing_features is empty"),
])
def test_cross_field_rules_name_their_keys_in_one_line(mutate, needle):
    e = _error(mutate)
    assert needle in e.message and "\n" not in str(e)
    assert ": : " not in e.message and "Value error" not in e.message
