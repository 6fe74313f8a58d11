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
    (lambda p: survey().assign(Bought=[str(i) for i in range(400)]).to_csv(p, index=False),
     "Bought", "regression"),
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
