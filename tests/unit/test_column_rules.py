"""The one rule for columns (tarn.core.columns): which names a served version accepts, ignores
or refuses, required inputs, integer codes, bounded echoes; and one table of cases run through
the server's function (tarn.serve.inputs) and the edge runner's (tarn.edge.runner, which
mirrors the rule without importing tarn), asserting the same outcome: the same values, or the
same refusal word for word."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tarn.config import ColumnSpec, PrepareConfig, SchemaConfig
from tarn.core.columns import BATCH, ColumnRules, clip, code_text, integer_codes, name_list
from tarn.core.features import input_schema
from tarn.core.schema import MISSING, conform, resolve_columns
from tarn.edge.export import bundle_schema
from tarn.edge.runner import Contract, columns_from_records, read_csv
from tarn.serve.inputs import (
    InputError,
    InputSchema,
    columns_from_signature,
    contract_violations,
    records_from_payload,
    refusal,
    to_columns,
)

# a flights-like contract: an identifier and a leak excluded (as `tarn init` excludes them), a
# category of integer codes, a departure time the model cannot answer without
SCHEMA = {
    "name": "flights", "task": "binary", "extra_columns": "error",
    "target": {"name": "delayed", "aliases": ["is_delayed"], "mapping": {"no": 0, "yes": 1}},
    "columns": [
        {"name": "age", "dtype": "int", "min": 17, "max": 100},
        {"name": "sex", "dtype": "category", "categories": ["1", "2"]},
        {"name": "carrier", "dtype": "category", "nullable": True,
         "categories": ["AA", "UA"]},
        {"name": "hours", "aliases": ["hours-per-week"], "dtype": "float", "nullable": True},
        {"name": "dep_time", "dtype": "float", "nullable": True, "required": True},
        {"name": "tailnum", "aliases": ["tail-number"], "dtype": "string", "nullable": True},
        {"name": "arr_time", "dtype": "float", "nullable": True},
    ],
}
EXCLUDED = ["tailnum", "arr_time"]
INPUTS = ["age", "hours", "dep_time", "sex", "carrier"]  # numbers first, as the signature


def contract(**changes) -> tuple[SchemaConfig, PrepareConfig]:
    return (SchemaConfig.model_validate({**SCHEMA, **changes}),
            PrepareConfig(exclude_features=EXCLUDED))


def lake_row(**changes) -> dict:
    """A row as it appears in the lake (and the curated table): every column, the target and
    the batch included."""
    row = {"age": 39, "sex": 2, "carrier": "AA", "hours-per-week": 40.5, "dep_time": 517.0,
           "tailnum": "N14228", "arr_time": 830.0, "delayed": "yes", BATCH: "0001-2013-01"}
    return {k: v for k, v in {**row, **changes}.items() if v is not ...}


# --------------------------------------------------------------------------- the rule
def test_required_implies_not_nullable_and_the_etl_quarantines_it():
    col = ColumnSpec.model_validate({"name": "dep_time", "dtype": "float", "nullable": True,
                                     "required": True})
    assert col.required and not col.nullable
    assert ColumnSpec(name="x", dtype="float", nullable=True).nullable
    schema, _ = contract()
    raw = pd.DataFrame([{**{k: str(v) for k, v in lake_row().items() if k != BATCH}},
                        {**{k: str(v) for k, v in lake_row().items() if k != BATCH},
                         "dep_time": ""}])
    res = conform(raw, schema, resolve_columns(list(raw.columns), schema, "f.csv"))
    assert len(res.rows) == 1 and res.rejects["reason"].tolist() == [MISSING]
    assert res.rejects["detail"].iloc[0].startswith("dep_time: missing value (required")


def test_rules_from_the_contract_are_the_signatures():
    """The rules the monitor builds from a card are the server's (built from the signature)."""
    schema, prepare = contract()
    mine = ColumnRules.of(schema, prepare)
    served = columns_from_signature(input_schema(schema, prepare).to_dict(), schema).rules
    assert mine.columns == served.columns and mine.names == INPUTS
    assert mine.ignored == served.ignored and mine.extra_columns == "error"
    kinds = {c.name: c for c in mine.columns}
    assert [c.kind for c in mine.columns] == ["long", "double", "double", "string", "string"]
    assert kinds["sex"].codes == frozenset({"1", "2"}) and kinds["carrier"].codes is None
    assert kinds["dep_time"].required and not kinds["hours"].required


def test_names_inputs_ignored_and_refused():
    schema, prepare = contract()
    rules = ColumnRules.of(schema, prepare)
    rename, unknown = rules.sort(["age", "Hours-per-week", "tailnum", "Tail Number",
                                  "arr_time", "delayed", "is_delayed", "batch", "zip"])
    assert rename == {"Hours-per-week": "hours"}
    assert unknown == ["zip"]
    ignoring = ColumnRules.of(*contract(extra_columns="ignore"))
    assert ignoring.sort(["zip", "age"]) == ({}, [])
    assert rules.missing_inputs(["age", "sex", "carrier", "hours", "dep_time", "proba"]) == []
    assert rules.missing_inputs(["age", "sex"]) == ["hours", "dep_time", "carrier"]


def test_a_contract_column_named_batch_is_an_input_not_ignored():
    raw = {**SCHEMA, "columns": [*SCHEMA["columns"], {"name": "batch", "dtype": "float"}]}
    rules = ColumnRules.of(SchemaConfig.model_validate(raw), EXCLUDED)
    assert "batch" in rules.names and rules.resolve("Batch") == "batch"
    assert "batch" not in rules.ignored


@pytest.mark.parametrize(("value", "text"), [
    (2, "2"), (2.0, "2"), (-3, "-3"), (0, "0"), (True, None), (1.5, None),
    (float("inf"), None), (float("nan"), None), (2 ** 60, None), ("2", None), (None, None)])
def test_whole_numbers_name_integer_codes(value, text):
    assert code_text(value) == text


def test_integer_codes_are_canonical_integers():
    assert integer_codes(["1", "02", "-3", "x", "1.0"]) == frozenset({"1", "-3"})
    assert integer_codes(["a", "b"]) is None and integer_codes(None) is None


def test_echoes_are_bounded():
    assert clip("x" * 5_000_000).endswith("... (5,000,000 characters)")
    assert len(clip("x" * 5_000_000)) < 120 and clip("abc") == "'abc'"
    names = [f"c{i}" for i in range(10_000)]
    text = name_list(names)
    assert text.endswith("and 9,990 more") and len(text) < 200
    assert name_list(["a", "b"]) == "['a', 'b']"


# --------------------------------------------------------------------------- one table, two paths
def server_outcome(records, schema, prepare):
    """What /predict decides (serve.unknown_values: refuse): the model's input columns, or
    the refusal's message."""
    inputs = InputSchema(columns_from_signature(input_schema(schema, prepare).to_dict(), schema))
    try:
        cols = to_columns(records_from_payload(records, inputs, 1000), inputs, 1000)
        found = contract_violations(cols, inputs)
        if found:
            raise refusal(found, inputs)
    except InputError as e:
        assert e.status == 422, e
        return str(e)
    return cols


def edge_outcome(records, schema, prepare):
    """What the edge runner decides from the bundle's schema.json alone."""
    try:
        return columns_from_records(records, Contract(bundle_schema(schema, prepare)))
    except ValueError as e:
        return str(e)


BIG = "x" * 5_000_000
CASES = {
    "a full lake row": ([lake_row()], "accept"),
    "two lake rows, one with a missing optional category": (
        [lake_row(), lake_row(carrier=None, sex=1)], "accept"),
    "inputs only": ([{k: v for k, v in lake_row().items() if k in INPUTS}], "accept"),
    "an optional input absent": ([lake_row(**{"hours-per-week": ..., "carrier": ...})],
                                 "accept"),
    "the target by its alias": ([lake_row(delayed=..., is_delayed="no")], "accept"),
    "an excluded column with a huge value": ([lake_row(tailnum=BIG)], "accept"),
    "the excluded column by its alias": ([lake_row(tailnum=..., **{"tail-number": "N1"})],
                                         "accept"),
    "a code as a float": ([lake_row(sex=2.0)], "accept"),
    "a code as text": ([lake_row(sex="1")], "accept"),
    "a code not declared": ([lake_row(sex=3)], "sex"),
    "a fraction for a code": ([lake_row(sex=1.5)], "sex"),
    "a boolean for a code": ([lake_row(sex=True)], "sex"),
    "a required input null": ([lake_row(dep_time=None)], "dep_time"),
    "a required input absent": ([lake_row(dep_time=...)], "dep_time"),
    "the second row lacks a required input": ([lake_row(), lake_row(dep_time=None)],
                                              "dep_time"),
    "an unknown column": ([lake_row(zip=75001)], "zip"),
    "10,000 unknown columns": ([{**lake_row(), **{f"extra_{i}": i for i in range(10_000)}}],
                               "extra_0"),
    "an unknown category": ([lake_row(carrier="Spaceship")], "carrier"),
    "a huge unknown category": ([lake_row(carrier=BIG)], "carrier"),
    "out of range": ([lake_row(age=150)], "age"),
    "text for a number": ([lake_row(age="39")], "age"),
    "a fraction for an integer": ([lake_row(age=39.5)], "age"),
    "infinity": ([lake_row(dep_time=float("inf"))], "dep_time"),
    "two names for one column": ([lake_row(hours=1.0)], "hours"),
    "a category sent as a number where no codes exist": ([lake_row(carrier=1)], "carrier"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_server_and_the_edge_runner_decide_alike(case):
    records, expected = CASES[case]
    schema, prepare = contract()
    server = server_outcome(records, schema, prepare)
    edge = edge_outcome(records, schema, prepare)
    if expected == "accept":
        assert isinstance(server, dict), server
        assert isinstance(edge, dict), edge
        assert list(server) == list(edge) == INPUTS
        for name in INPUTS:
            a, b = server[name], edge[name]
            if a.dtype == object:
                assert a.tolist() == b.tolist(), name
            else:
                np.testing.assert_array_equal(a, b, err_msg=name)
        assert server["sex"].tolist()[0] in ("1", "2")  # a code became its category
        return
    assert isinstance(server, str) and isinstance(edge, str), (server, edge)
    assert server == edge
    assert expected in server
    assert len(server) < 1_500, len(server)  # bounded whatever the client sent


def test_extra_columns_ignore_accepts_any_name_on_both_paths():
    schema, prepare = contract(extra_columns="ignore")
    records = [lake_row(zip=75001, note="x" * 100)]
    server = server_outcome(records, schema, prepare)
    edge = edge_outcome(records, schema, prepare)
    assert isinstance(server, dict) and isinstance(edge, dict)
    assert server["age"].tolist() == edge["age"].tolist() == [39.0]


def test_every_payload_shape_accepts_a_lake_row():
    """dataframe_split and columnar inputs read a lake row's columns as records do."""
    schema, prepare = contract()
    row = lake_row()
    want = server_outcome([row], schema, prepare)
    split = {"dataframe_split": {"columns": list(row), "data": [list(row.values())]}}
    columnar = {"inputs": {k: [v] for k, v in row.items()}}
    for payload in (split, columnar, {"dataframe_records": [row]}, {"instances": [row]}):
        got = server_outcome(payload, schema, prepare)
        assert isinstance(got, dict), got
        assert [got[k].tolist() for k in INPUTS] == [want[k].tolist() for k in INPUTS]


# --------------------------------------------------------------------------- the runner's CSV
def write_csv(path: Path, rows: list[dict]) -> Path:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(list(rows[0]))
    for r in rows:
        w.writerow(["" if v is None else v for v in r.values()])
    path.write_text(out.getvalue())
    return path


def fields(schema, prepare) -> list[tuple[str, bool]]:
    return [(c["name"], c["type"] == "string") for c in input_schema(schema, prepare).to_dict()]


def test_the_runner_reads_a_lake_file_as_it_is(tmp_path):
    schema, prepare = contract()
    c = Contract(bundle_schema(schema, prepare))
    path = write_csv(tmp_path / "lake.csv", [lake_row(), lake_row(carrier=None, sex=1)])
    cols, lines = read_csv(path, fields(schema, prepare), c)
    assert lines == [2, 3]
    assert cols["sex"].tolist() == ["2", "1"] and cols["carrier"].tolist() == ["AA", None]
    records = server_outcome([lake_row(), lake_row(carrier=None, sex=1)], schema, prepare)
    for name in INPUTS:
        assert cols[name].tolist() == records[name].tolist(), name


@pytest.mark.parametrize(("change", "needle"), [
    ({"dep_time": None}, "line 3: column 'dep_time' is required"),
    ({"zip": 1}, "unknown column(s) ['zip']"),
])
def test_the_runner_refuses_a_csv_as_the_server_refuses_records(tmp_path, change, needle):
    schema, prepare = contract()
    c = Contract(bundle_schema(schema, prepare))
    rows = [lake_row(**{k: 1 for k in change if k == "zip"}), lake_row(**change)]
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(ValueError) as e:
        read_csv(path, fields(schema, prepare), c)
    assert needle in str(e.value)


def test_a_bundle_from_before_the_rule_ignores_other_names(tmp_path):
    """schema.json without ``ignored``/``extra_columns`` (older bundles): extra CSV columns
    are ignored, as the runner did then."""
    schema, prepare = contract()
    old = bundle_schema(schema, prepare)
    del old["ignored"], old["extra_columns"]
    path = write_csv(tmp_path / "old.csv", [lake_row(zip=1)])
    cols, _ = read_csv(path, fields(schema, prepare), Contract(old))
    assert cols["age"].tolist() == [39.0]
