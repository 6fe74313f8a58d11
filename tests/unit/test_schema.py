import pandas as pd
import pytest

from tarn.config import params_from_dict
from tarn.core import schema as sc
from tarn.datasets import ADULT_COLUMNS
from tarn.errors import EtlError
from tests.support.project import repo_params_dict

SCHEMA = params_from_dict(repo_params_dict()).schema
GOOD = ["39", " State-gov", "77516", "Bachelors", "13", "Never-married", "Adm-clerical",
        "Not-in-family", "White", "Male", "2174", "0", "40", "United-States", "<=50K"]


def frame(*rows):
    return pd.DataFrame([list(r) for r in rows], columns=ADULT_COLUMNS, dtype=object)


def conform(df):
    return sc.conform(df, SCHEMA, sc.resolve_columns(list(df.columns), SCHEMA, "f.csv"))


def with_(i, value):
    r = list(GOOD)
    r[i] = value
    return r


def test_good_row_is_typed_trimmed_and_labelled():
    res = conform(frame(GOOD, with_(14, ">50K.")))
    assert res.rejects.empty
    row = res.rows.iloc[0]
    assert row["workclass"] == "State-gov"  # stray space trimmed
    assert row["education_num"] == 13 and str(res.rows["age"].dtype) == "Int64"
    assert res.rows["income"].tolist() == [0, 1]  # '>50K.' maps like '>50K'


def test_missing_marker_in_nullable_column_is_kept_as_missing():
    res = conform(frame(with_(1, "?")))
    assert res.rejects.empty and pd.isna(res.rows.iloc[0]["workclass"])


@pytest.mark.parametrize(("i", "value", "reason", "detail"), [
    (0, "abc", sc.NOT_NUMBER, "age: 'abc' is not a number"),
    (0, "39.5", sc.NOT_INTEGER, "age: 39.5 is not an integer"),
    (0, "7", sc.OUT_OF_RANGE, "age: 7 outside [17.0, 100.0]"),
    (1, "Astronaut", sc.UNKNOWN_CATEGORY, "workclass: unknown category 'Astronaut'"),
    (3, "?", sc.MISSING, "education: missing value"),
    (14, "rich", sc.UNKNOWN_LABEL, "income: unknown label 'rich'"),
    (14, "", sc.MISSING, "income: missing label"),
])
def test_contract_violations_are_rejected_with_reason(i, value, reason, detail):
    res = conform(frame(GOOD, with_(i, value)))
    assert len(res.rows) == 1
    assert res.rejects.loc[1, "reason"] == reason
    assert res.rejects.loc[1, "detail"] == detail


def test_unknown_categories_can_be_kept_by_policy():
    raw = repo_params_dict()
    raw["schema"]["unknown_categories"] = "keep"
    schema = params_from_dict(raw).schema
    df = frame(with_(1, "Astronaut"))
    res = sc.conform(df, schema, sc.resolve_columns(list(df.columns), schema, "f"))
    assert res.rejects.empty and res.rows.iloc[0]["workclass"] == "Astronaut"


def test_missing_column_is_an_error_naming_file_and_column():
    with pytest.raises(EtlError) as e:
        sc.resolve_columns([c for c in ADULT_COLUMNS if c != "age"], SCHEMA, "lake/b/f.csv")
    assert "lake/b/f.csv" in e.value.message and "'age'" in e.value.message
    assert "alias" in e.value.hint


def test_extra_column_is_an_error_or_ignored_by_policy():
    with pytest.raises(EtlError, match="unexpected column"):
        sc.resolve_columns([*ADULT_COLUMNS, "zip"], SCHEMA, "f.csv")
    raw = repo_params_dict()
    raw["schema"]["extra_columns"] = "ignore"
    schema = params_from_dict(raw).schema
    mapping = sc.resolve_columns([*ADULT_COLUMNS, "zip"], schema, "f.csv")
    assert "zip" not in mapping and mapping["education-num"] == "education_num"


def test_arrow_schema_is_fixed_by_the_contract():
    s = sc.arrow_schema(SCHEMA)
    assert str(s.field("age").type) == "int64" and str(s.field("sex").type) == "string"
    assert str(s.field("income").type) == "int8"


# ------------------------------------------------------------------ column-wise = row-wise
def reference_conform(raw, schema, mapping):
    """The straightforward pandas version (value by value), kept as the reference."""
    import numpy as np

    df = raw.rename(columns=mapping)
    n = len(df)
    reasons = pd.Series([None] * n, index=df.index, dtype=object)
    details = pd.Series([None] * n, index=df.index, dtype=object)

    def flag(mask, code, msg):
        new = mask & reasons.isna()
        reasons[new] = code
        details[new] = msg[new] if isinstance(msg, pd.Series) else msg

    def clean(col):
        if col not in df:
            return pd.Series([None] * n, index=df.index, dtype=object)
        s = df[col].astype(object).where(df[col].notna(), None)
        s = s.map(lambda v: v.strip() if isinstance(v, str) else v)
        return s.where(~s.isin(set(schema.missing_values)), None)

    out = {}
    for spec in schema.columns:
        s = clean(spec.name)
        absent = s.isna()
        if not spec.nullable:
            flag(absent, sc.MISSING, f"{spec.name}: missing value")
        if spec.numeric:
            num = pd.to_numeric(s, errors="coerce")
            bad = num.isna() & ~absent
            flag(bad, sc.NOT_NUMBER, spec.name + ": " + s.astype(str).map(repr)
                 + " is not a number")
            if spec.dtype == "int":
                frac = num.notna() & (np.floor(num) != num)
                flag(frac, sc.NOT_INTEGER, spec.name + ": " + s.astype(str) + " is not an integer")
            lo = spec.min if spec.min is not None else -np.inf
            hi = spec.max if spec.max is not None else np.inf
            oor = num.notna() & ((num < lo) | (num > hi))
            flag(oor, sc.OUT_OF_RANGE,
                 spec.name + ": " + s.astype(str) + f" outside [{spec.min}, {spec.max}]")
            ok = num.where(~(bad | oor))
            out[spec.name] = ok.round().astype("Int64") if spec.dtype == "int" else ok.astype(
                float)
        else:
            if spec.categories is not None and schema.unknown_categories == "quarantine":
                flag(s.notna() & ~s.isin(spec.categories), sc.UNKNOWN_CATEGORY,
                     spec.name + ": unknown category " + s.astype(str).map(repr))
            out[spec.name] = s
    t = clean(schema.target.name)
    label = t.map(schema.target.mapping)
    flag(t.isna(), sc.MISSING, f"{schema.target.name}: missing label")
    flag(label.isna() & t.notna(), sc.UNKNOWN_LABEL,
         schema.target.name + ": unknown label " + t.astype(str).map(repr))
    out[schema.target.name] = label
    rows = pd.DataFrame(out, index=df.index)
    good = reasons.isna()
    rows = rows[good].copy()
    rows[schema.target.name] = rows[schema.target.name].astype("int8")
    return sc.Conformed(rows, pd.DataFrame({"reason": reasons[~good], "detail": details[~good]}))


TRICKY = [
    GOOD, with_(0, " 39 "), with_(0, "39.0"), with_(0, "39.5"), with_(0, "+40"), with_(0, "4e1"),
    with_(0, "nan"), with_(0, "inf"), with_(0, "1e400"), with_(0, "17"), with_(0, "16"),
    with_(0, "100.0"), with_(0, "١٢"), with_(0, "1_000"), with_(0, ""), with_(0, " ? "),
    with_(1, "?"), with_(1, "  "), with_(1, "Astronaut"), with_(1, "private"), with_(3, "?"),
    with_(2, "99999999999999"), with_(2, "0"), with_(2, "-5"), with_(10, "99999"),
    with_(10, "100000"), with_(12, " 40\t"), with_(13, "?"), with_(13, "Mars"),
    with_(14, ">50K."), with_(14, " <=50K "), with_(14, "rich"), with_(14, "?"),
    with_(0, "ab'c\"d"), with_(9, None), with_(11, None), with_(14, None),
    with_(8, "White "), with_(3, "Bachelors\u00a0"),
]


def _compare(raw, schema, mapping):
    new = sc.conform(raw, schema, mapping)
    ref = reference_conform(raw, schema, mapping)
    pd.testing.assert_frame_equal(new.rows, ref.rows)
    pd.testing.assert_frame_equal(new.rejects, ref.rejects)
    return new


def test_conform_equals_the_row_wise_reference_on_a_tricky_frame():
    raw = frame(*TRICKY)
    res = _compare(raw, SCHEMA, sc.resolve_columns(list(raw.columns), SCHEMA, "f.csv"))
    assert 0 < len(res.rows) < len(TRICKY) and len(res.rejects) > 10


def test_conform_equals_the_reference_with_alias_headers_and_keep_policy():
    raw_params = repo_params_dict()
    raw_params["schema"]["unknown_categories"] = "keep"
    schema = params_from_dict(raw_params).schema
    headers = [h.upper().replace("-", " ") if i % 2 else h for i, h in enumerate(ADULT_COLUMNS)]
    headers[-1] = "class"  # a target alias
    raw = pd.DataFrame([list(r) for r in TRICKY], columns=headers, dtype=object)
    _compare(raw, schema, sc.resolve_columns(headers, schema, "f.csv"))


def test_conform_equals_the_reference_on_json_lines_with_missing_keys():
    records = [dict(zip(ADULT_COLUMNS, r, strict=True)) for r in TRICKY[:12]]
    for i, r in enumerate(records):
        del r[ADULT_COLUMNS[i % len(ADULT_COLUMNS)]]
    raw = pd.DataFrame.from_records(records).astype(object)
    raw = raw.where(raw.notna(), None)
    mapping = sc.resolve_columns(list(raw.columns), SCHEMA, "f.jsonl", strict_missing=False)
    raw = raw[list(mapping)]
    del raw["workclass"]  # a key no record has
    mapping.pop("workclass")
    res = _compare(raw, SCHEMA, mapping)
    assert "missing_value" in res.rejects["reason"].tolist()


def test_number_syntax_matches_pandas():
    values = ["39", "+39", "-3", "39.", ".5", "1e3", "1E+3", "1e-3", "inf", "-Infinity", "nan",
              "1_000", "0x10", "1,000", "١٢", "1e400", "+.5e1", "5e", "e5", "--1", "INF"]
    for v in values:
        ref = pd.to_numeric(pd.Series([v], dtype=object), errors="coerce").iloc[0]
        res = sc.conform(frame(with_(2, v)), SCHEMA, sc.resolve_columns(ADULT_COLUMNS, SCHEMA,
                                                                         "f"))
        if pd.isna(ref):
            assert res.rejects["reason"].tolist() == [sc.NOT_NUMBER], v
        else:
            assert res.rejects["reason"].tolist() != [sc.NOT_NUMBER], v


def test_raw_json_is_json_dumps_column_wise():
    import json

    df = pd.DataFrame({"a": ["x", None, 'q"uote', "back\\slash", "tab\tnl\nctl\x01", "é/ü"],
                       "b c": ["1", "2", "3", "4", "5", None]}, dtype=object)
    got = sc.raw_json(df).to_pylist()
    want = [json.dumps(dict(zip(df.columns, r, strict=True)), ensure_ascii=False)
            for r in df.itertuples(index=False, name=None)]
    assert got == want


def test_regression_target_is_a_number_within_its_range():
    raw = repo_params_dict()
    raw["schema"]["task"] = "regression"
    raw["schema"]["target"] = {"name": "income", "min": 0, "max": 100}
    raw["promote"]["metric"] = ""
    schema = params_from_dict(raw).schema
    df = frame(with_(14, "12.5"), with_(14, "rich"), with_(14, "150"), with_(14, "inf"),
               with_(14, "?"))
    res = sc.conform(df, schema, sc.resolve_columns(list(df.columns), schema, "f.csv"))
    assert res.rows["income"].tolist() == [12.5]
    assert str(res.rows["income"].dtype) == "float64"
    assert sorted(res.rejects["reason"]) == sorted(
        [sc.NOT_NUMBER, sc.OUT_OF_RANGE, sc.NOT_NUMBER, sc.MISSING])
