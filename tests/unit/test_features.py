import numpy as np
import pandas as pd

from tarn.config import params_from_dict
from tarn.core.features import build_preprocessor, feature_columns, input_schema, to_model_frame
from tests.support.project import repo_params_dict


def params(**prepare):
    raw = repo_params_dict()
    raw["prepare"].update(prepare)
    return params_from_dict(raw)


def rows(n=50, seed=0):
    rng = np.random.default_rng(seed)
    p = params()
    df = pd.DataFrame({c.name: (rng.integers(17, 90, n) if c.numeric
                                else rng.choice(c.categories, n)) for c in p.schema.columns})
    df["workclass"] = df["workclass"].astype(object)
    df.loc[:4, "workclass"] = None
    df["age"] = df["age"].astype("Int64")
    df.loc[0, "age"] = pd.NA
    return df


def test_model_frame_types_follow_the_contract():
    p = params()
    x = to_model_frame(rows().iloc[1:].assign(batch="b", income=1), p.schema, p.prepare)
    assert list(x.columns) == sum(feature_columns(p.schema, p.prepare), [])
    assert x["age"].dtype == np.int64  # an integer that can never be missing stays integer
    assert x["workclass"].isna().sum() == 4
    x = to_model_frame(rows(), p.schema, p.prepare)  # a missing int (bad input) -> float NaN
    assert x["age"].dtype == np.float64 and np.isnan(x.loc[0, "age"])


def test_input_schema_optional_exactly_where_the_contract_allows_missing():
    p = params()
    cols = {c.name: c for c in input_schema(p.schema, p.prepare).inputs}
    assert cols["age"].type.name == "long" and cols["age"].required
    assert cols["workclass"].type.name == "string" and not cols["workclass"].required
    assert cols["sex"].required


def test_preprocessor_handles_missing_and_unknown_categories():
    p = params()
    pre = build_preprocessor(p.schema, p.prepare)
    train = to_model_frame(rows(), p.schema, p.prepare)
    pre.fit(train)
    new = train.iloc[:3].copy()
    new.loc[new.index[0], "workclass"] = "Astronaut"  # never seen in training
    new.loc[new.index[1], "age"] = np.nan
    z = pre.transform(new)
    assert z.shape[0] == 3 and np.isfinite(z).all()
    names = list(pre.get_feature_names_out())
    wc = [i for i, n in enumerate(names) if n.startswith("workclass_")]
    assert z[0, wc].sum() == 0  # unknown category encodes as all-zeros
    assert "workclass_missing" in names


def test_scaler_is_fitted_on_training_data_only():
    p = params(numeric_scaler="standard")
    pre = build_preprocessor(p.schema, p.prepare)
    train = to_model_frame(rows(seed=1), p.schema, p.prepare)
    pre.fit(train)
    z = pre.transform(train)
    age = list(pre.get_feature_names_out()).index("age")
    assert abs(z[:, age].mean()) < 1e-6
    shifted = train.assign(age=train["age"] + 100)
    assert pre.transform(shifted)[:, age].mean() > 3  # not refitted on new data


def test_excluded_features_are_not_model_inputs():
    p = params(exclude_features=["fnlwgt", "race"])
    num, cat = feature_columns(p.schema, p.prepare)
    assert "fnlwgt" not in num and "race" not in cat


def test_none_and_nan_both_mean_missing():
    """JSON null arrives as None, pandas missing as NaN: both must encode the same."""
    p = params()
    train = to_model_frame(rows(), p.schema, p.prepare)
    pre = build_preprocessor(p.schema, p.prepare).fit(train)
    a = train.iloc[:1].copy()
    a["workclass"] = np.nan
    b = a.copy()
    b["workclass"] = None
    assert (pre.transform(a) == pre.transform(b)).all()
    names = list(pre.get_feature_names_out())
    assert pre.transform(b)[0, names.index("workclass_missing")] == 1
