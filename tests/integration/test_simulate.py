"""`tarn lake simulate`: simulated batches go through the real snapshot + ETL, and each kind of
drift is measured on the rows the ETL curates (after deduplication), not only on the file."""

import json
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from tarn.cli import app
from tarn.core.lake import Lake
from tarn.datasets import ADULT_COLUMNS
from tarn.errors import TarnError
from tarn.lifecycle.simulate import build_batch, load_pool, simulate
from tarn.stages import etl, snapshot
from tests.support.project import write_params


def _through_etl(params, root, kind, rows, **kw):
    """Simulate one batch into the project's lake, run snapshot + ETL; return the batch name,
    its ETL counts, its curated rows and its quarantined rows."""
    name, _ = simulate(params, root, kind, rows, **kw)
    snapshot.run(params, root)
    res = etl.run(params, root)
    curated = pd.read_parquet(res.curated)
    quarantine = pd.read_parquet(res.quarantine)
    return (name, res.report["batches"][name], curated[curated["batch"] == name],
            quarantine[quarantine["batch"] == name])


@pytest.mark.parametrize("kind", ["none", "covariate", "prior"])
def test_kinds_without_new_categories_pass_the_contract(lake_project, kind):
    params, root = lake_project
    name, counts, curated, _ = _through_etl(params, root, kind, 600, seed=1)
    assert name == f"0004-sim-{kind}"  # after the fixture's three batches
    assert counts["read"] == 600 and counts["rejected"] == 0
    assert counts["written"] + counts["duplicates"] == 600
    assert len(curated) == counts["written"]
    # fnlwgt is jittered: new people, not copies of the seeded adult.data rows
    assert counts["duplicates"] <= 2


def test_new_category_rows_are_quarantined(lake_project):
    params, root = lake_project
    _, counts, _, q = _through_etl(params, root, "new-category", 600, seed=1, share=0.3)
    assert counts["read"] == 600
    assert counts["rejected_by_reason"] == {"unknown_category": 180}  # exactly 30 %
    assert counts["written"] + counts["duplicates"] == 420
    rejected = q[q["reason"] == "unknown_category"]
    assert len(rejected) == 180
    assert rejected["detail"].str.contains("workclass: unknown category 'Gig-economy'").all()
    assert {json.loads(r)["workclass"] for r in rejected["raw"]} == {"Gig-economy"}


def test_covariate_shift_moves_the_chosen_columns_only(lake_project):
    params, root = lake_project
    _, counts, curated, _ = _through_etl(params, root, "covariate", 2000, seed=3)
    source = load_pool(params.schema).typed
    moved = {c: (curated[c].mean() - source[c].mean()) / source[c].std()
             for c in ("age", "hours_per_week", "fnlwgt")}
    print({c: (round(source[c].mean(), 2), round(curated[c].mean(), 2)) for c in moved},
          counts)
    # seeds 0-9 give +0.44..0.52 sd (age), +0.44..0.50 sd (hours), -0.01..-0.10 sd (fnlwgt)
    assert moved["age"] > 0.35 and moved["hours_per_week"] > 0.35  # ~ +5 years, ~ +4.5 hours
    assert abs(moved["fnlwgt"]) < 0.15  # not chosen; only mildly correlated with age


def test_covariate_strength_direction_and_categorical_columns(params_only):
    down = build_batch(params_only.schema, "covariate", 2000, seed=3, strength=-1.0)
    none = build_batch(params_only.schema, "covariate", 2000, seed=3, strength=0.0)
    for col in ("age", "hours_per_week"):
        measure, before, after = down.shifts[col]
        assert measure == "mean" and after < before - 5
        assert abs(none.shifts[col][2] - before) < 1.5
    cat = build_batch(params_only.schema, "covariate", 2000, seed=3, columns=["sex", "workclass"])
    measure, before, after = cat.shifts["sex"]  # rarest half of sex: Female
    assert measure == "rare-half share" and before < 0.35 and after > 0.6
    _, before, after = cat.shifts["workclass"]
    assert after > 2.5 * before


def test_prior_shift_hits_the_requested_rate(lake_project):
    params, root = lake_project
    _, counts, curated, _ = _through_etl(params, root, "prior", 2000, seed=5, positive_rate=0.5)
    print("curated positive rate", curated["income"].mean(), counts)
    assert abs(curated["income"].mean() - 0.5) < 0.03
    low = build_batch(params.schema, "prior", 1000, seed=5, positive_rate=0.1)
    assert low.positive_rate == pytest.approx(0.1) and low.source_positive_rate > 0.2


def test_raw_format_and_determinism(params_only):
    a = build_batch(params_only.schema, "none", 3000, seed=7)
    lines = a.text.splitlines()
    assert lines[0] == ", ".join(ADULT_COLUMNS)  # the header `tarn lake seed` writes
    assert len(lines) == 3001 and a.text.endswith("\n")
    assert all(len(ln.split(", ")) == 15 for ln in lines[1:])
    assert ", ?, " in a.text  # missing values stay raw
    assert {ln.rsplit(", ", 1)[1] for ln in lines[1:]} == {">50K", "<=50K"}  # no trailing dot
    for kind in ("none", "covariate", "prior", "new-category"):
        one = build_batch(params_only.schema, kind, 500, seed=11)
        assert one.text == build_batch(params_only.schema, kind, 500, seed=11).text
        assert one.text != build_batch(params_only.schema, kind, 500, seed=12).text


def test_more_rows_than_the_source_holds(params_only):
    big = build_batch(params_only.schema, "none", 20_000, seed=1, source="test")
    assert big.rows == 20_000 and big.text.count("\n") == 20_001  # drawn with replacement


def test_written_bytes_and_names(tmp_path):
    params = write_params(tmp_path)
    assert simulate(params, tmp_path, "none", 50, seed=2)[0] == "0001-sim-none"
    assert simulate(params, tmp_path, "none", 50, seed=2, batch_name="spring")[0] == "0002-spring"
    path = tmp_path / "data" / "lake" / "0001-sim-none" / "adult.csv"
    assert path.read_text() == build_batch(params.schema, "none", 50, seed=2).text
    assert [b.name for b in Lake(str(tmp_path / "data" / "lake")).batches()] == [
        "0001-sim-none", "0002-spring"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"kind": "seasonal"}, "unknown drift kind"),
    ({"rows": 0}, "at least 1"),
    ({"columns": ["agee"]}, "unknown column 'agee'"),
    ({"columns": ["income"]}, "is the label"),
    ({"kind": "new-category", "columns": ["age"]}, "no category list"),
    ({"kind": "new-category", "columns": ["sex", "race"]}, "one column"),
    ({"kind": "new-category", "share": 0.0}, "--share"),
    ({"kind": "prior", "positive_rate": 1.5}, "--positive-rate"),
    ({"strength": float("nan")}, "--strength"),
    ({"source": "validation"}, "unknown source"),
])
def test_bad_arguments_raise_tarn_error(params_only, kwargs, match):
    args = {"kind": "covariate", "rows": 10, **kwargs}
    with pytest.raises(TarnError, match=match) as e:
        build_batch(params_only.schema, **args)
    assert e.value.hint


def test_aliases_name_the_same_column(params_only):
    a = build_batch(params_only.schema, "covariate", 200, seed=1, columns=["hours-per-week"])
    b = build_batch(params_only.schema, "covariate", 200, seed=1, columns=["hours_per_week"])
    assert a.text == b.text and list(a.shifts) == ["hours_per_week"]


def test_cli_help_and_run(tmp_path, monkeypatch):
    runner = CliRunner()
    res = runner.invoke(app, ["lake", "simulate", "--help"], terminal_width=200)
    assert res.exit_code == 0
    for word in ("--drift", "covariate", "new-category", "--positive-rate", "--strength"):
        assert word in res.output
    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["lake", "simulate", "--drift", "covariate", "--rows", "300",
                              "--columns", "age"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "wrote batch 0001-sim-covariate: 300 rows" in res.output
    assert re.search(r"age mean 38\.\d+ -> 4\d\.\d+", res.output), res.output
    res = runner.invoke(app, ["lake", "simulate", "--drift", "bogus"], terminal_width=200)
    assert res.exit_code == 1 and "error: unknown drift kind 'bogus'" in res.output


@pytest.fixture
def params_only(tmp_path):
    return write_params(tmp_path)
