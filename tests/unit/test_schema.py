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
