"""The only model loader: it reads YAML and skops' type listing, and refuses anything that
could run code when loaded (no model is fitted here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import skops.io
import yaml
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from tarn.core.model import UntrustedModel, check_trusted, load_trusted


def model_dir(tmp_path: Path, obj, **sklearn_flavor) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    skops.io.dump(obj, d / "model.skops")
    flavor = {"pickled_model": "model.skops", "serialization_format": "skops", "code": None,
              **sklearn_flavor}
    (d / "MLmodel").write_text(yaml.safe_dump({"flavors": {
        "python_function": {"loader_module": "mlflow.sklearn", "model_path": "model.skops"},
        "sklearn": flavor}}))
    return d


def test_a_plain_skops_pipeline_loads(tmp_path):
    d = model_dir(tmp_path, Pipeline([("s", StandardScaler())]))
    assert isinstance(load_trusted(d), Pipeline)


@pytest.mark.parametrize(("flavor", "needle"), [
    ({"serialization_format": "cloudpickle"}, "not skops"),
    ({"serialization_format": "pickle"}, "not skops"),
    ({"code": "code"}, "bundles Python code"),
    ({"pickled_model": "../model.skops"}, "not a .skops file inside"),
    ({"pickled_model": "model.pkl"}, "not a .skops file inside"),
])
def test_the_models_own_files_cannot_talk_the_loader_into_trusting_it(tmp_path, flavor,
                                                                      needle):
    d = model_dir(tmp_path, Pipeline([("s", StandardScaler())]), **flavor)
    with pytest.raises(UntrustedModel, match=needle):
        check_trusted(d)


def test_a_code_folder_is_refused_even_if_mlmodel_does_not_mention_it(tmp_path):
    d = model_dir(tmp_path, Pipeline([("s", StandardScaler())]))
    (d / "code").mkdir()
    with pytest.raises(UntrustedModel, match="bundles Python code"):
        check_trusted(d)


def test_types_outside_the_allow_list_are_refused_whatever_mlmodel_trusts(tmp_path):
    pipe = Pipeline([("f", FunctionTransformer(print))])  # a builtin callable: runs on load
    d = model_dir(tmp_path, pipe, skops_trusted_types=["builtins.print"])
    with pytest.raises(UntrustedModel, match="outside tarn's allow-list.*print"):
        check_trusted(d)


def test_a_non_pipeline_is_refused(tmp_path):
    d = model_dir(tmp_path, {"a": 1})
    with pytest.raises(UntrustedModel, match="not a Pipeline"):
        load_trusted(d)
