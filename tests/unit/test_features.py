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


def test_a_wide_categorical_is_one_column_of_codes_ordered_by_the_target():
    """4,000 values cost one design column, not 4,000; codes follow the target's mean."""
    raw = repo_params_dict()
    raw["schema"]["columns"].append({"name": "tail", "dtype": "string", "nullable": True})
    p = params_from_dict(raw)
    n = 8000
    rng = np.random.default_rng(0)
    df = rows(n).assign(tail=rng.choice([f"t{i}" for i in range(4000)], n).astype(object))
    df.loc[:99, "tail"] = "hot"  # 100 rows, all positive
    df.loc[100:199, "tail"] = "cold"  # 100 rows, all negative
    y = (df["tail"] == "hot").astype(int).to_numpy()
    X = to_model_frame(df, p.schema, p.prepare)
    pre = build_preprocessor(p.schema, p.prepare, X).fit(X, y)
    names = list(pre.get_feature_names_out())
    assert names.count("tail") == 1 and not any(n.startswith("tail_") for n in names)
    z = pre.transform(X.iloc[[0, 100, 500]].assign(
        tail=["hot", "cold", "never-seen"]))
    col = names.index("tail")
    assert z[0, col] > z[1, col] >= 0  # hot after cold in the code order
    assert z[2, col] == -1  # unknown (and rare: fewer than min_category_rows) -> -1
    rare = X["tail"].iloc[300]  # a value of ~2 rows: below min_category_rows
    assert pre.transform(X.iloc[[300]])[0, col] == -1, rare


def test_few_valued_categoricals_stay_one_hot_and_the_limit_is_a_setting():
    p = params()
    X = to_model_frame(rows(200), p.schema, p.prepare)
    names = list(build_preprocessor(p.schema, p.prepare, X).fit(X).get_feature_names_out())
    assert "sex_Male" in names and "race_White" in names and "race" not in names
    p = params(onehot_max_values=4)
    names = list(build_preprocessor(p.schema, p.prepare, X).fit(X).get_feature_names_out())
    assert "native_country" in names and "sex_Male" in names  # 2 values stay one-hot
