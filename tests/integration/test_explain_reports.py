"""Explanations in the evaluation report, for every task (Adult, iris, diabetes through the
real stages): global importance, importance per sensitive group and the proxy check in
evaluate.json, evaluation.html and `tarn report`."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tarn.core.explain import SUMMARY_ROWS
from tarn.lifecycle.report import report
from tarn.stages import etl, evaluate, prepare, snapshot
from tests.support.project import make_version, small_project
from tests.support.tasks import task_project

pytestmark = pytest.mark.slow
QUICK = {"evaluate.evidently": False}


@pytest.fixture(scope="module", params=["binary", "multiclass", "regression"])
def evaluated(request, tmp_path_factory):
    kind = request.param
    root = tmp_path_factory.mktemp(f"explained-{kind}")
    if kind == "binary":
        params = small_project(root, **QUICK)
    else:
        params = task_project(root, kind, **QUICK)
        snapshot.run(params, root)
        etl.run(params, root)
        prepare.run(params, root)
    make_version(params, root, rounds=20, depth=3)
    evaluate.run(params, root)
    return kind, params, root, json.loads((root / "reports" / "evaluate.json").read_text())


def test_global_and_per_group_importance_per_task(evaluated):
    kind, params, root, ev = evaluated
    s = ev["explanations"]
    features = {c.name for c in params.schema.columns}
    assert set(s["global"]) == features  # the user's columns, none encoded
    values = list(s["global"].values())
    assert values == sorted(values, reverse=True) and values[0] > 0
    test_rows = len(pd.read_parquet(root / "data" / "prepared" / "test.parquet"))
    assert s["rows"] == min(test_rows, SUMMARY_ROWS)
    assert s["raw_score"].startswith({"binary": "log-odds of class", "multiclass":
                                      "log-odds per class", "regression":
                                      "the predicted value"}[kind])
    for feat in params.schema.sensitive:
        groups = s["by_group"][feat]
        assert len(groups) >= 2
        for g in groups.values():
            assert set(g) == features and all(v >= 0 for v in g.values())


def test_the_proxy_check_names_columns_and_their_share(evaluated):
    kind, params, root, ev = evaluated
    proxies = ev["explanations"]["proxies"]
    assert set(proxies) == set(params.schema.sensitive)
    for feat, p in proxies.items():
        assert len(p["proxies"]) == 3 and feat not in [x["column"] for x in p["proxies"]]
        assoc = [x["association"] for x in p["proxies"]]
        assert assoc == sorted(assoc, reverse=True) and 0 <= assoc[-1] <= assoc[0] <= 1
        assert p["proxies_share"] == pytest.approx(sum(x["share"] for x in p["proxies"]))
        assert 0 <= p["proxies_share"] <= 1 and 0 <= p["own_share"] <= 1
    if kind == "binary":  # Adult: sex is carried by how a person describes their household
        names = [x["column"] for x in proxies["sex"]["proxies"]]
        assert "relationship" in names, proxies["sex"]


def test_the_page_and_tarn_report_show_them(evaluated):
    kind, params, root, ev = evaluated
    page = (root / "reports" / "evaluation.html").read_text()
    assert "Global importance" in page and "Proxy check" in page
    for feat in params.schema.sensitive:
        assert f"Importance per group of {feat}" in page
    sections, _ = report(params, root)
    titles = [s.title for s in sections]
    assert "global importance (mean |contribution|), test split" in titles
    top = sections[titles.index("global importance (mean |contribution|), test split")]
    assert top.rows[0][0] == next(iter(ev["explanations"]["global"]))
    assert "proxy check (training rows), test split" in titles
