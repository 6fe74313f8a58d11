import numpy as np
import pandas as pd
import pytest

from tarn.errors import TarnError
from tarn.stages import etl, prepare, snapshot
from tests.support.project import write_params


@pytest.fixture
def curated(lake_project):
    params, root = lake_project
    snapshot.run(params, root)
    etl.run(params, root)
    return params, root


def test_test_split_is_exactly_the_test_batches(curated):
    params, root = curated
    res = prepare.run(params, root)
    d = root / "data" / "prepared"
    test = pd.read_parquet(d / "test.parquet")
    train = pd.read_parquet(d / "train.parquet")
    valid = pd.read_parquet(d / "valid.parquet")
    table = pd.read_parquet(root / "data" / "curated" / "table.parquet")
    assert set(test["batch"]) == {"0003-adult-test"}
    assert len(test) == (table["batch"] == "0003-adult-test").sum()
    assert len(train) + len(valid) + len(test) == len(table)
    assert len(valid) == pytest.approx(0.2 * (len(train) + len(valid)), abs=1)
    assert abs(train["income"].mean() - valid["income"].mean()) < 0.01  # stratified
    assert res.rows == {"train": len(train), "valid": len(valid), "test": len(test)}


def test_split_is_seeded(curated):
    params, root = curated
    prepare.run(params, root)
    a = pd.read_parquet(root / "data" / "prepared" / "valid.parquet")
    prepare.run(params, root)
    pd.testing.assert_frame_equal(a, pd.read_parquet(root / "data" / "prepared" / "valid.parquet"))
    prepare.run(write_params(root, {"prepare.seed": 7}), root)
    assert not a.equals(pd.read_parquet(root / "data" / "prepared" / "valid.parquet"))


def test_weights_sit_beside_the_splits_and_equalise_rates(curated):
    params, root = curated
    prepare.run(params, root)
    d = root / "data" / "prepared"
    train = pd.read_parquet(d / "train.parquet")
    w = pd.read_parquet(d / "train_weights.parquet")["weight"].to_numpy()
    assert len(w) == len(train)
    rates = [np.average(train.loc[m, "income"], weights=w[m])
             for m in (train["sex"] == "Male", train["sex"] == "Female")]
    assert rates[0] == pytest.approx(rates[1])
    assert len(pd.read_parquet(d / "valid_weights.parquet")) == len(
        pd.read_parquet(d / "valid.parquet"))


def test_bias_reports(curated):
    params, root = curated
    prepare.run(params, root)
    import json
    m = json.loads((root / "reports" / "bias.json").read_text())
    assert set(m["train"]) == {"sex", "race"}
    assert m["train"]["sex"]["disparate_impact_min"] < 0.8  # Adult is biased against women
    assert m["train_reweighed"]["sex"]["disparate_impact_min"] == pytest.approx(1.0)
    html = (root / "reports" / "bias.html").read_text()
    assert "Female" in html and "data:image/png;base64," in html and "http" not in html


def test_no_test_batch_is_a_clear_error(curated):
    _, root = curated
    params = write_params(root, {"prepare.test_batches": ["*nothing*"]})
    with pytest.raises(TarnError, match="prepare.test_batches"):
        prepare.run(params, root)
