import pytest

from tarn.config import load_params, params_from_dict
from tarn.errors import ConfigError

from tests.conftest import REPO, repo_params_dict


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
