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
from tarn.core import windows
from tarn.core.infer import InitError, propose
from tests.support.project import REPO, missing_params

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
        "gender"] and params.promote.gated(params.schema.sensitive) == ["gender"]
    assert "warning: identifier: respondent_id: near-unique text (400 distinct values in 400 " \
           "rows) -> excluded from the features (--include respondent_id keeps it)" in res.output
    assert params.prepare.exclude_features == ["respondent_id"]  # kept in the contract
    assert "region: category (4 categories" in res.output
    batches = sorted(p.name for p in (tmp_path / "data" / "lake").iterdir())
    assert batches == ["0001-data", "0002-data"]
    assert params.prepare.test_split == "latest" and params.prepare.test_latest == 1
    # dvc repro needs every key dvc.yaml names, read or not
    assert missing_params(yaml.safe_load((tmp_path / "params.yaml").read_text())) == []
    assert "# tarn configuration" in (tmp_path / "params.yaml").read_text()  # comments kept


def test_a_column_equal_to_the_target_is_flagged(tmp_path, monkeypatch):
    df = survey()
    df["Outcome code"] = df["Bought"].map({"yes": "1", "no": "0"})
    f = project(tmp_path, df)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["init", str(f), "--target", "Bought", "--force"],
                        terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "warning: leakage: outcome_code: one value per target class and back: it " \
           "determines the target exactly; alone it scores AUC 1.000" in res.output
    params = params_from_dict(yaml.safe_load((tmp_path / "params.yaml").read_text()))
    assert params.prepare.exclude_features == ["respondent_id", "outcome_code"]


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
    raw["promote"]["fairness_features"] = None
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
    assert params.promote.metric == ""
    assert params.promote.gated(params.schema.sensitive) == ["gender"]
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


# ------------------------------------------------------------- checks before training
def _warning(output: str, kind: str, column: str) -> str:
    hits = [ln for ln in output.splitlines() if ln.startswith(f"warning: {kind}: {column}: ")]
    assert hits, output
    return hits[0]


def flights(n: int = 2_500, seed: int = 11) -> pd.DataFrame:
    """A flights-like export: a constant year, a timestamp, a 105-value airport code, integer
    codes, an id, and a delay flag to predict (some rows without one)."""
    rng = np.random.default_rng(seed)
    dest = [f"D{i:03d}" for i in range(105)]
    late = rng.choice(["yes", "no"], n, p=[0.3, 0.7])
    hours = np.sort(rng.integers(0, 365 * 24 - 5, n))
    hours[0] = 0
    return pd.DataFrame({
        "flight_id": [f"F{i:06d}" for i in rng.permutation(n)],
        "year": "2013",
        "time_hour": pd.to_datetime(np.datetime64("2013-01-01T05:00") +
                                    hours.astype("timedelta64[h]")).strftime("%Y-%m-%d %H:%M:%S"),
        "dest": np.array(dest)[np.arange(n) % 105],
        "carrier_code": rng.choice(["9", "16", "20", "31", "44"], n),
        "distance": rng.integers(80, 4_000, n).astype(str),
        "arr_delay_min": np.where(late == "yes", rng.integers(16, 300, n),
                                  rng.integers(-30, 15, n)).astype(str),
        "late": np.where(rng.random(n) < 0.02, "", late),
    })


def test_checks_name_each_problem_column_and_exclude_it(tmp_path, monkeypatch):
    f = project(tmp_path, flights())
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["init", str(f), "--target", "late", "--force"],
                        terminal_width=250)
    assert res.exit_code == 0, res.output
    out = res.output
    assert "near-unique text" in _warning(out, "identifier", "flight_id")
    assert "one value, '2013', in every row" in _warning(out, "constant", "year")
    assert "  year: int (one value, 2013: no range proposed)" in out  # not 1811..2215
    stamp = _warning(out, "timestamp", "time_hour")
    assert "dates 2013-01-01 05:00:00 .. " in stamp and "--time time_hour would order" in stamp
    assert "free text" not in out.split("  time_hour:")[1].splitlines()[0]
    assert "5 distinct integers, named like a code" in _warning(out, "codes", "carrier_code")
    leak = _warning(out, "leakage", "arr_delay_min")
    assert float(leak.split("alone it predicts the target with AUC ")[1][:5]) >= 0.99
    missing = (flights()["late"] == "").sum()
    assert f"warning: missing target: {missing:,} rows have no target: the ETL will " \
           "quarantine them" in out
    assert "excluded from the features (prepare.exclude_features; kept in the contract): " \
           "flight_id (identifier), year (constant), time_hour (timestamp), arr_delay_min " \
           "(leakage); `--include COL` keeps one" in out
    params = params_from_dict(yaml.safe_load((tmp_path / "params.yaml").read_text()))
    cols = {c.name: c for c in params.schema.columns}
    assert params.prepare.exclude_features == ["flight_id", "year", "time_hour",
                                               "arr_delay_min"]
    assert cols["year"].dtype == "int" and cols["year"].min is None and cols["year"].max is None
    assert cols["time_hour"].dtype == "string"
    assert cols["dest"].dtype == "category" and len(cols["dest"].categories) == 105
    assert cols["carrier_code"].categories == ["9", "16", "20", "31", "44"]
    assert cols["distance"].dtype == "int"  # a measure stays a number
    assert not [ln for ln in out.splitlines() if ln.startswith("warning: ") and
                ln.split(": ")[2] == "distance"]


def test_time_key_include_and_exclude_change_what_is_excluded(tmp_path, monkeypatch):
    f = project(tmp_path, flights())
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["init", str(f), "--target", "late", "--time", "time_hour",
                              "--include", "arr_delay_min", "--exclude", "Distance".lower(),
                              "--force"], terminal_width=250)
    assert res.exit_code == 0, res.output
    assert "it is the time key (--time): batches follow it" in _warning(
        res.output, "timestamp", "time_hour")
    assert _warning(res.output, "leakage", "arr_delay_min").endswith(
        "-> kept as a feature (--include)")
    params = params_from_dict(yaml.safe_load((tmp_path / "params.yaml").read_text()))
    assert params.prepare.exclude_features == ["flight_id", "year", "time_hour", "distance"]
    assert params.schema.time_key == "time_hour"


def test_a_flagged_sensitive_feature_is_kept(tmp_path, monkeypatch):
    df = survey().assign(Gender="f")
    df.loc[0, "Gender"] = "m"  # near-constant, still a group to measure
    df["Site"] = "a"
    f = project(tmp_path, df)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["init", str(f), "--target", "Bought", "--sensitive", "Site",
                              "--force"], terminal_width=250)
    assert res.exit_code == 0, res.output
    assert _warning(res.output, "constant", "site").endswith(
        "kept: a sensitive feature (--sensitive) is measured, never dropped")
    assert "'f' in 99.8% of the rows -> kept (--exclude gender drops it)" in _warning(
        res.output, "near-constant", "gender")


@pytest.mark.parametrize(("args", "needle"), [
    (["--exclude", "Nope"], "--exclude 'Nope': no such column"),
    (["--exclude", "Bought"], "--exclude 'Bought': that is the target, never a feature"),
    (["--include", "bought"], "--include 'bought': that is the target"),
    (["--include", "Nope"], "--include 'Nope': no such column"),
    (["--exclude", "Income", "--include", "income"], "given both to --exclude and --include"),
    (["--exclude", "Age (years)", "--exclude", "Income", "--exclude", "Region",
      "--exclude", "Gender"], "no feature is left"),
])
def test_bad_exclude_or_include_is_one_line_and_writes_nothing(tmp_path, monkeypatch, args,
                                                               needle):
    f = project(tmp_path, survey())
    monkeypatch.chdir(tmp_path)
    before = (tmp_path / "params.yaml").read_text()
    res = runner.invoke(app, ["init", str(f), "--target", "Bought", "--force", *args],
                        terminal_width=250)
    assert res.exit_code == 1 and needle in res.output, res.output
    assert [ln.split(":")[0] for ln in res.output.strip().splitlines()] == ["error", "fix"]
    assert (tmp_path / "params.yaml").read_text() == before
    assert not (tmp_path / "data").exists()


# ------------------------------------------------------------------------- batch names
def test_files_named_by_year_are_batches_in_order_and_the_newest_is_the_test(tmp_path,
                                                                             monkeypatch):
    df = survey(600)
    project(tmp_path)
    for year, part in (("2015", df.iloc[:300]), ("2016", df.iloc[300:])):
        part.to_csv(tmp_path / f"{year}.csv", index=False)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["init", "2015.csv", "2016.csv", "--target", "Bought", "--force"],
                        terminal_width=250)
    assert res.exit_code == 0, res.output
    params = params_from_dict(yaml.safe_load((tmp_path / "params.yaml").read_text()))
    lake = sorted(p.name for p in (tmp_path / "data" / "lake").iterdir())
    assert lake == ["0001-2015", "0002-2016"]
    assert windows.held_out(lake, params.prepare) == ["0002-2016"]
    df.iloc[:50].assign(Bought="yes").to_csv(tmp_path / "2017.csv", index=False)
    res = runner.invoke(app, ["lake", "add", "2017.csv", "--batch", "2017"], terminal_width=250)
    assert res.exit_code == 0 and "added batch 0003-2017 " in res.output, res.output
    # the window moves: the new batch is the test split now, 2016 is training data
    assert windows.held_out([*lake, "0003-2017"], params.prepare) == ["0003-2017"]


@pytest.mark.parametrize(("names", "batches"), [
    (["train.csv", "test.csv"], ["0001-train", "0002-test"]),
    (["a-test.csv", "test.csv"], ["0001-a-test", "0002-test"]),
    (["(copy) data.csv"], ["0001-copy-data", "0002-copy-data"]),
])
def test_batch_names_never_double_and_the_newest_is_held_out(tmp_path, monkeypatch, names,
                                                             batches):
    df = survey(600)
    project(tmp_path)
    for i, name in enumerate(names):
        df.iloc[i * 300:(i + 1) * 300].to_csv(tmp_path / name, index=False)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["init", *names, "--target", "Bought", "--force"],
                        terminal_width=250)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "data" / "lake").iterdir()) == batches
    params = params_from_dict(yaml.safe_load((tmp_path / "params.yaml").read_text()))
    assert windows.held_out(batches, params.prepare) == [batches[-1]]
