"""`tarn init` on files it has never seen: the contract it proposes, what it warns about, and
one clear line (nothing written) for each kind of bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from tarn.cli import app
from tarn.config import params_from_dict
from tarn.core.infer import InitError, propose
from tests.support.project import REPO

runner = CliRunner()


def project(tmp_path, frame: pd.DataFrame | None = None, name: str = "data.csv"):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    if frame is not None:
        frame.to_csv(tmp_path / name, index=False)
    return tmp_path / name


def survey(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "Respondent ID": [f"r-{i:05d}" for i in range(n)],
        "Age (years)": rng.integers(18, 90, n).astype(str),
        "Income": np.round(rng.lognormal(10, 1, n), 2).astype(str),
        "Region": rng.choice(["north", "south", "east", "west", "?"], n),
        "Gender": rng.choice(["f", "m"], n),
        "Bought": rng.choice(["yes", "no"], n, p=[0.3, 0.7]),
    })


def test_init_proposes_a_contract_that_validates_and_says_why(tmp_path, monkeypatch):
    f = project(tmp_path, survey())
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["init", str(f), "--target", "Bought", "--sensitive", "Gender",
                              "--force"], terminal_width=200)
    assert res.exit_code == 0, res.output
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params = params_from_dict(raw)
    cols = {c.name: c for c in params.schema.columns}
    assert cols["age_years"].dtype == "int" and cols["age_years"].aliases == ["Age (years)"]
    assert cols["age_years"].min <= 18 and cols["age_years"].max >= 89
    assert cols["income"].dtype == "float"
    assert cols["region"].dtype == "category" and cols["region"].nullable
    assert "?" in params.schema.missing_values and "?" not in cols["region"].categories
    assert cols["respondent_id"].dtype == "string"
    assert params.schema.target.mapping == {"no": 0, "yes": 1}  # the rarer class is 1
    assert params.schema.sensitive == ["gender"] and params.bias.reweighing_features == [
        "gender"] and params.promote.fairness_feature == "gender"
    assert "respondent_id looks like an identifier" in res.output
    assert "region: category (4 categories" in res.output
    batches = sorted(p.name for p in (tmp_path / "data" / "lake").iterdir())
    assert batches == ["0001-data", "0002-data-test"]
    assert params.prepare.test_batches == ["*-data-test"]
    assert "# tarn configuration" in (tmp_path / "params.yaml").read_text()  # comments kept


def test_a_column_equal_to_the_target_is_flagged(tmp_path, monkeypatch):
    df = survey()
    df["Outcome code"] = df["Bought"].map({"yes": "1", "no": "0"})
    f = project(tmp_path, df)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["init", str(f), "--target", "Bought", "--force"],
                        terminal_width=200)
    assert res.exit_code == 0 and "outcome_code determines the target exactly" in res.output


def test_an_existing_contract_is_kept_unless_forced(tmp_path, monkeypatch):
    f = project(tmp_path, survey())
    monkeypatch.chdir(tmp_path)
    before = (tmp_path / "params.yaml").read_text()
    res = runner.invoke(app, ["init", str(f), "--target", "Bought"], terminal_width=200)
    assert res.exit_code == 1 and "already has a contract" in res.output
    assert (tmp_path / "params.yaml").read_text() == before


@pytest.mark.parametrize(("write", "target", "needle"), [
    (lambda p: p.write_text(""), "Bought", "empty"),
    (lambda p: survey().to_csv(p, index=False), "Purchased", "target column 'Purchased'"),
    (lambda p: survey().assign(Bought="yes").to_csv(p, index=False), "Bought", "constant"),
    (lambda p: survey(6).assign(Bought=["yes"] + ["no"] * 5).to_csv(p, index=False), "Bought",
     "has 1 row(s)"),
    (lambda p: survey().assign(Income=["1.5"] * 390 + ["n/k"] * 10).to_csv(p, index=False),
     "Bought", "mixes numbers"),
    (lambda p: p.write_bytes(b"PAR1 not a csv"), "Bought", "the content is Parquet"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, write, target,
                                                  needle):
    f = project(tmp_path)
    write(f)
    monkeypatch.chdir(tmp_path)
    before = (tmp_path / "params.yaml").read_text()
    res = runner.invoke(app, ["init", str(f), "--target", target, "--force"],
                        terminal_width=200)
    assert res.exit_code == 1 and needle in res.output, res.output
    assert "Traceback" not in res.output and "unexpected" not in res.output
    assert (tmp_path / "params.yaml").read_text() == before
    assert not (tmp_path / "data").exists()


# ------------------------------------------------------------------ tasks (pure: frames in)
def _with_target(values) -> pd.DataFrame:
    df = survey(len(values))
    return df.assign(Bought=[str(v) for v in values])


def _validates(schema: dict) -> None:
    """The proposed ``schema:`` section is a valid contract in the repo's params.yaml."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["schema"] = schema
    raw["promote"]["metric"] = ""
    raw["bias"].update(privileged={}, mitigation="none", reweighing_features=[])
    raw["promote"]["fairness_feature"] = None
    params_from_dict(raw)


def test_text_labels_are_a_multiclass_contract_in_sorted_order():
    rng = np.random.default_rng(1)
    p = propose(_with_target(rng.choice(["Gentoo", "Adelie", "Chinstrap"], 300)), "Bought")
    assert p.task == "multiclass" and p.schema["task"] == "multiclass"
    assert p.schema["target"]["mapping"] == {"Adelie": 0, "Chinstrap": 1, "Gentoo": 2}
    assert "min" not in p.schema["target"]
    assert "task: multiclass (target 'Bought', auto: 3 distinct labels" in p.notes[0]
    _validates(p.schema)


def test_a_rating_is_multiclass_by_default_with_classes_in_numeric_order():
    ratings = np.random.default_rng(2).integers(1, 13, 600)  # 1..12: "10" sorts after "9"
    p = propose(_with_target(ratings), "Bought")
    assert p.task == "multiclass"
    assert p.schema["target"]["mapping"] == {str(i): i - 1 for i in range(1, 13)}
    assert "12 distinct integers (at most 20)" in p.notes[0] and "--task regression" in p.notes[0]
    _validates(p.schema)


def test_task_regression_overrides_auto_on_a_rating():
    ratings = np.random.default_rng(3).integers(1, 6, 300)
    p = propose(_with_target(ratings), "Bought", task="regression")
    target = p.schema["target"]
    assert p.task == "regression" and p.schema["task"] == "regression"
    assert "mapping" not in target and (target["min"], target["max"]) == (0.0, 6.0)  # margin
    assert "--task; auto would pick multiclass" in p.notes[0]
    _validates(p.schema)


@pytest.mark.parametrize(("values", "why"), [
    (np.round(np.random.default_rng(4).normal(150, 40, 300), 1), "not all integers"),
    (np.random.default_rng(5).integers(25, 347, 300), "(more than 20)"),
])
def test_numbers_are_regression_with_a_widened_range(values, why):
    p = propose(_with_target(values), "Bought", sensitive=["Gender"])
    target = p.schema["target"]
    lo, hi = float(values.min()), float(values.max())
    assert p.task == "regression" and why in p.notes[0]
    assert target["min"] < lo and target["max"] > hi  # a margin, as for features
    assert target["min"] >= lo - 0.11 * (hi - lo) and target["max"] <= hi + 0.11 * (hi - lo)
    # a target unique per row pairs with any unique column: no leakage warning for that
    assert not [w for w in p.warnings if "determines the target" in w]
    _validates(p.schema)


@pytest.mark.parametrize(("values", "task", "needle"), [
    (["a"] * 10 + ["b"] * 10 + ["c"], "auto", "target class 'c' has 1 row(s)"),
    (["a"] * 10 + ["b"] * 10 + ["c"] * 5, "binary", "a binary target has 2 values"),
    (["a"] * 10 + ["b"] * 10, "multiclass", "a multiclass target has 3 or more classes"),
    (["a"] * 10 + ["b"] * 10 + ["c"] * 5, "regression", "must be a number"),
    (["a"] * 10 + ["b"] * 10, "ordinal", "unknown task 'ordinal'"),
])
def test_a_task_that_does_not_fit_the_target_is_refused_with_a_fix(values, task, needle):
    with pytest.raises(InitError) as err:
        propose(_with_target(values), "Bought", task=task)
    assert needle in err.value.message and err.value.hint


@pytest.mark.parametrize(("values", "task", "mitigation"), [
    (np.random.default_rng(6).choice(["x", "y", "z"], 400), "multiclass", "reweighing"),
    (np.round(np.random.default_rng(7).normal(10, 3, 400), 2), "regression", "none"),
])
def test_init_writes_params_that_fit_the_task(tmp_path, monkeypatch, values, task, mitigation):
    f = project(tmp_path, _with_target(values), name="shop-2024.csv")
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["init", str(f), "--target", "Bought", "--sensitive", "Gender",
                              "--force"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert f"task: {task} (target 'Bought', auto:" in res.output
    text = (tmp_path / "params.yaml").read_text()
    params = params_from_dict(yaml.safe_load(text))
    assert params.schema.task == task and params.schema.name == "shop"
    assert params.promote.metric == "" and params.promote.fairness_feature == "gender"
    assert params.bias.mitigation == mitigation
    assert params.mlflow.registered_model == "tarn-shop"  # not the demo's tarn-adult
    assert "threshold applies to binary tasks only" in text
    if task == "regression":
        assert "a regression target has none" in text and not params.schema.target.mapping
    else:
        assert params.schema.classes == ["x", "y", "z"]


def test_numeric_codes_of_a_sensitive_feature_are_groups_not_a_range():
    df = _with_target(np.random.default_rng(8).normal(10, 3, 200).round(2))
    df["Sex"] = np.random.default_rng(9).choice(["1.0", "2.0"], 200)
    df["Visits"] = np.random.default_rng(10).choice(["1", "2", "10"], 200)
    p = propose(df, "Bought", sensitive=["Sex"])
    cols = {c["name"]: c for c in p.schema["columns"]}
    assert cols["sex"]["dtype"] == "category" and cols["sex"]["categories"] == ["1.0", "2.0"]
    assert cols["visits"]["dtype"] == "int"  # not sensitive: a number as before
    assert "numeric codes of a sensitive feature" in " ".join(p.notes)
    _validates(p.schema)
