"""Drawing a simulated batch, pure: a pool of typed rows in, raw CSV and figures out, for every
task (no lake, no ETL: those are in tests/integration/test_simulate.py)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest

from tarn.config import ColumnSpec, SchemaConfig, TargetSpec
from tarn.errors import TarnError
from tarn.lifecycle.simulate import Pool, build_batch, default_columns, raw_text


def _schema(task: str, key: list[str] | None = None) -> SchemaConfig:
    mapping = {"binary": {"bad": 0, "good": 1, "GOOD": 1},
               "multiclass": {"red": 0, "green": 1, "blue": 2}}.get(task, {})
    return SchemaConfig(
        task=task, key=key or [], target=TargetSpec(name="y", mapping=mapping),
        columns=[ColumnSpec(name="id", dtype="int"),
                 ColumnSpec(name="kind", dtype="category", categories=["x", "y", "z"],
                            nullable=True),
                 ColumnSpec(name="size", dtype="float", nullable=True),
                 ColumnSpec(name="count", dtype="int", min=0, max=100)])


def _pool(task: str, n: int = 600, seed: int = 0) -> Pool:
    rng = np.random.default_rng(seed)
    size = rng.normal(10, 2, n)
    size[:5] = np.nan
    kinds = rng.choice(["x", "y", "z"], n, p=[0.6, 0.3, 0.1]).astype(object)
    kinds[5:8] = None
    y = {"binary": (rng.random(n) < 0.3).astype(int),
         "multiclass": rng.choice(3, n, p=[0.5, 0.3, 0.2]),
         "regression": np.round(np.nan_to_num(size, nan=10) * 3 + rng.normal(0, 1, n), 2)}[task]
    frame = pd.DataFrame({"id": np.arange(n), "kind": kinds, "size": size,
                          "count": pd.array(rng.integers(0, 100, n), dtype="Int64"), "y": y})
    return Pool.of(frame, _schema(task))


def _rows(text: str) -> pd.DataFrame:
    return pd.DataFrame(list(csv.DictReader(io.StringIO(text))))


def test_raw_text_writes_what_the_contract_reads():
    schema = _schema("multiclass")
    frame = pd.DataFrame({"id": [7], "kind": [None], "size": [np.nan], "count": [3], "y": [2]})
    assert raw_text(frame, schema) == "id,kind,size,count,y\n7,?,?,3,blue\n"
    reg = raw_text(frame.assign(y=[151.5], size=[0.25]), _schema("regression"))
    assert reg.splitlines()[1] == "7,?,0.25,3,151.5"
    # the first raw label mapped to a class names it
    assert raw_text(frame.assign(y=[1]), _schema("binary")).endswith(",good\n")


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_every_kind_for_every_task(task):
    pool, schema = _pool(task), _schema(task)
    for kind in ("none", "covariate", "prior", "new-category"):
        b = build_batch(pool, schema, kind, 300, seed=4)
        rows = _rows(b.text)
        assert len(rows) == 300 and list(rows.columns) == ["id", "kind", "size", "count", "y"]
        assert b.text == build_batch(pool, schema, kind, 300, seed=4).text
    assert build_batch(pool, schema, "covariate", 10).columns == ["id", "size"]
    assert default_columns(schema, "new-category") == ["kind"]


def test_multiclass_prior_moves_class_one_and_keeps_the_others_proportions():
    pool, schema = _pool("multiclass"), _schema("multiclass")
    b = build_batch(pool, schema, "prior", 1000, seed=1, positive_rate=0.6)
    labels = _rows(b.text)["y"].value_counts()
    assert labels["green"] == 600
    # red : blue in the source is about 5 : 2; the remaining 400 rows keep it
    src = pool.rows["y"].value_counts()
    assert abs(labels["red"] - 400 * src[0] / (src[0] + src[2])) <= 1
    assert b.target_measure == "share of 'green'" and b.target_value == pytest.approx(0.6)


def test_regression_prior_tilts_the_target():
    pool, schema = _pool("regression"), _schema("regression")
    up = build_batch(pool, schema, "prior", 2000, seed=2, strength=2.0)
    down = build_batch(pool, schema, "prior", 2000, seed=2, strength=-2.0)
    assert up.target_measure == "target mean"
    assert up.target_value > up.source_target_value + 3  # target sd ~ 6
    assert down.target_value < down.source_target_value - 3
    values = _rows(up.text)["y"].astype(float)
    assert values.mean() == pytest.approx(up.target_value)


def test_covariate_moves_numbers_and_the_category_mix():
    pool, schema = _pool("binary"), _schema("binary")
    b = build_batch(pool, schema, "covariate", 3000, seed=3, columns=["size", "kind"])
    measure, before, after = b.shifts["size"]
    assert measure == "mean" and after > before + 0.5  # sd 2
    measure, before, after = b.shifts["kind"]  # the rarest half: z and the missing ones
    assert measure == "rare-half share" and after > 2 * before


def test_new_category_replaces_a_share_of_one_column():
    pool, schema = _pool("regression"), _schema("regression")
    b = build_batch(pool, schema, "new-category", 200, seed=5, share=0.25)
    kinds = _rows(b.text)["kind"]
    assert b.new_category == "New-kind" and (kinds == "New-kind").sum() == 50 == b.replaced


def test_keys_are_new_so_rows_are_not_duplicates():
    schema = _schema("binary", key=["id"])
    pool = Pool.of(_pool("binary").rows, schema)
    ids = _rows(build_batch(pool, schema, "none", 500, seed=6).text)["id"].astype(int)
    assert ids.is_unique and ids.min() > pool.rows["id"].max()
    other = _rows(build_batch(pool, schema, "none", 500, seed=7).text)["id"].astype(int)
    assert not set(ids) & set(other)  # two batches do not collide either


def test_bad_requests_name_the_fix():
    pool, schema = _pool("binary"), _schema("binary")
    with pytest.raises(TarnError, match="no category list") as e:
        build_batch(pool, schema, "new-category", 10, columns=["size"])
    assert "--columns kind" in e.value.hint
    with pytest.raises(TarnError, match="lack"):
        Pool.of(pool.rows.drop(columns="size"), schema)
    only_ones = Pool(pool.rows.assign(y=1))
    with pytest.raises(TarnError, match="class index 1 only"):
        build_batch(only_ones, schema, "prior", 10, positive_rate=0.5)
