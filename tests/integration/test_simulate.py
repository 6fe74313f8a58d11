"""`tarn lake simulate` on the demo project: simulated batches are drawn from the project's own
curated rows, go through the real snapshot + ETL, and each kind of drift is measured on the rows
the ETL curates, not only on the file. (Other tasks: tests/integration/test_monitor_tasks.py;
the pure drawing: tests/unit/test_simulate.py.)"""

import json
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from tarn.cli import app
from tarn.core.lake import Lake
from tarn.errors import TarnError
from tarn.lifecycle.simulate import build_batch, load_pool, simulate
from tarn.stages import etl, snapshot
from tests.support.project import write_params, write_small_lake


@pytest.fixture
def curated(lake_project):
    """(params, root, pool): the small demo lake snapshotted and curated, its training rows."""
    params, root = lake_project
    snapshot.run(params, root)
    etl.run(params, root)
    return params, root, load_pool(params, root)


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
def test_kinds_without_new_categories_pass_the_contract(curated, kind):
    params, root, _ = curated
    name, counts, rows, _ = _through_etl(params, root, kind, 600, seed=1)
    assert name == f"0004-sim-{kind}"  # after the fixture's three batches
    assert counts["read"] == 600 and counts["rejected"] == 0
    assert counts["written"] == 600 and len(rows) == 600  # no key: repeats are other people


def test_new_category_rows_are_quarantined(curated):
    params, root, _ = curated
    _, counts, _, q = _through_etl(params, root, "new-category", 600, seed=1, share=0.3)
    assert counts["read"] == 600
    assert counts["rejected_by_reason"] == {"unknown_category": 180}  # exactly 30 %
    assert counts["written"] == 420
    rejected = q[q["reason"] == "unknown_category"]
    assert len(rejected) == 180  # the first categorical column with a list, by default
    assert rejected["detail"].str.contains("workclass: unknown category 'New-workclass'").all()
    assert {json.loads(r)["workclass"] for r in rejected["raw"]} == {"New-workclass"}


def test_covariate_shift_moves_the_chosen_columns_only(curated):
    params, root, pool = curated
    _, counts, rows, _ = _through_etl(params, root, "covariate", 2000, seed=3,
                                      columns=["age", "hours_per_week"])
    source = pool.rows
    moved = {c: (rows[c].mean() - source[c].mean()) / source[c].std()
             for c in ("age", "hours_per_week", "fnlwgt")}
    print({c: (round(source[c].mean(), 2), round(rows[c].mean(), 2)) for c in moved}, counts)
    assert moved["age"] > 0.3 and moved["hours_per_week"] > 0.3
    assert abs(moved["fnlwgt"]) < 0.15  # not chosen; only mildly correlated with age


def test_covariate_defaults_strength_direction_and_categorical_columns(curated):
    params, _, pool = curated
    schema = params.schema
    plain = build_batch(pool, schema, "covariate", 2000, seed=3)
    assert plain.columns == ["age", "fnlwgt"]  # the first two numeric features
    down = build_batch(pool, schema, "covariate", 2000, seed=3, strength=-1.0,
                       columns=["age", "hours_per_week"])
    none = build_batch(pool, schema, "covariate", 2000, seed=3, strength=0.0,
                       columns=["age", "hours_per_week"])
    for col in ("age", "hours_per_week"):
        measure, before, after = down.shifts[col]
        assert measure == "mean" and after < before - 3
        assert abs(none.shifts[col][2] - before) < 1.5
    cat = build_batch(pool, schema, "covariate", 2000, seed=3, columns=["sex", "workclass"])
    measure, before, after = cat.shifts["sex"]  # rarest half of sex: Female
    assert measure == "rare-half share" and before < 0.4 and after > 0.6
    _, before, after = cat.shifts["workclass"]
    assert after > 2 * before


def test_prior_shift_hits_the_requested_rate(curated):
    params, root, pool = curated
    _, counts, rows, _ = _through_etl(params, root, "prior", 2000, seed=5, positive_rate=0.5)
    print("curated positive rate", rows["income"].mean(), counts)
    assert rows["income"].mean() == pytest.approx(0.5)
    low = build_batch(pool, params.schema, "prior", 1000, seed=5, positive_rate=0.1)
    assert low.target_measure == "share of '>50K'"
    assert low.target_value == pytest.approx(0.1) and low.source_target_value > 0.2


def test_raw_format_and_determinism(curated):
    params, _, pool = curated
    a = build_batch(pool, params.schema, "none", 3000, seed=7)
    lines = a.text.splitlines()
    assert lines[0] == ",".join([*params.schema.feature_names, "income"])  # contract names
    assert len(lines) == 3001 and a.text.endswith("\n")
    assert all(len(ln.split(",")) == 15 for ln in lines[1:])
    assert ",?," in a.text  # missing values as the contract's first missing marker
    assert {ln.rsplit(",", 1)[1] for ln in lines[1:]} == {">50K", "<=50K"}  # raw class names
    for kind in ("none", "covariate", "prior", "new-category"):
        one = build_batch(pool, params.schema, kind, 500, seed=11)
        assert one.text == build_batch(pool, params.schema, kind, 500, seed=11).text
        assert one.text != build_batch(pool, params.schema, kind, 500, seed=12).text


def test_sources_and_more_rows_than_the_source_holds(curated):
    params, root, pool = curated
    test = load_pool(params, root, "test")
    assert len(pool.rows) == 800 and len(test.rows) == 200  # train batches / held-out ones
    big = build_batch(test, params.schema, "none", 5_000, seed=1)
    assert big.rows == 5_000 and big.text.count("\n") == 5_001  # drawn with replacement


def test_without_a_curated_table_the_lake_is_read(lake_project):
    params, root = lake_project
    pool = load_pool(params, root)  # no etl run: the lake through the ETL's code path
    assert len(pool.rows) == 800 and set(pool.rows["income"]) == {0, 1}


def test_written_bytes_and_names(curated):
    params, root, pool = curated
    assert simulate(params, root, "none", 50, seed=2)[0] == "0004-sim-none"
    assert simulate(params, root, "none", 50, seed=2, batch_name="spring")[0] == "0005-spring"
    path = root / "data" / "lake" / "0004-sim-none" / "batch.csv"
    assert path.read_text() == build_batch(pool, params.schema, "none", 50, seed=2).text
    assert [b.name for b in Lake(str(root / "data" / "lake")).batches()][-2:] == [
        "0004-sim-none", "0005-spring"]


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
])
def test_bad_arguments_raise_tarn_error(curated, kwargs, match):
    params, _, pool = curated
    args = {"kind": "covariate", "rows": 10, **kwargs}
    with pytest.raises(TarnError, match=match) as e:
        build_batch(pool, params.schema, **args)
    assert e.value.hint


def test_unknown_source_and_an_empty_project(tmp_path):
    params = write_params(tmp_path)
    with pytest.raises(TarnError, match="unknown source") as e:
        load_pool(params, tmp_path, "validation")
    assert e.value.hint
    (tmp_path / "data" / "lake").mkdir(parents=True)  # an empty lake
    with pytest.raises(TarnError, match="no curated rows") as e:
        simulate(params, tmp_path, "none", 10)
    assert "tarn lake" in e.value.hint


def test_aliases_name_the_same_column(curated):
    params, _, pool = curated
    a = build_batch(pool, params.schema, "covariate", 200, seed=1, columns=["hours-per-week"])
    b = build_batch(pool, params.schema, "covariate", 200, seed=1, columns=["hours_per_week"])
    assert a.text == b.text and list(a.shifts) == ["hours_per_week"]


def test_cli_help_and_run(tmp_path, monkeypatch):
    runner = CliRunner()
    res = runner.invoke(app, ["lake", "simulate", "--help"], terminal_width=200)
    assert res.exit_code == 0
    for word in ("--drift", "covariate", "new-category", "--positive-rate", "--strength"):
        assert word in res.output
    assert "adult" not in res.output.lower()
    params = write_params(tmp_path)
    write_small_lake(tmp_path / "data" / "lake")
    snapshot.run(params, tmp_path)
    etl.run(params, tmp_path)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["lake", "simulate", "--drift", "covariate", "--rows", "300",
                              "--columns", "age"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "wrote batch 0004-sim-covariate: 300 rows" in res.output
    assert re.search(r"age mean 3\d\.\d+ -> 4\d\.\d+", res.output), res.output
    res = runner.invoke(app, ["lake", "simulate", "--drift", "bogus"], terminal_width=200)
    assert res.exit_code == 1 and "error: unknown drift kind 'bogus'" in res.output
