"""An explanation summary (:func:`tarn.core.explain.summary`) as small tables.

Pure and light on purpose: `tarn report` prints these tables and must not import numpy,
pandas or the model stack that computing the summary needs (:mod:`tarn.core.explain`)."""

from __future__ import annotations

TABLE_COLUMNS = 15  # columns listed in a report's tables (largest first)


def tables(s: dict | None, top: int = TABLE_COLUMNS) -> list[tuple[str, list[str], list]]:
    """A summary as (title, headers, rows) tables, the largest ``top`` columns each:
    global importance, importance per group of each sensitive feature, the proxy check
    (the evaluation page and `tarn report` print the same tables)."""
    if not s or "unavailable" in s:
        return []
    cols = list(s["global"])[:top]
    total = sum(s["global"].values()) or 1.0
    out = [("global importance (mean |contribution|)", ["column", "mean |contribution|",
                                                        "share"],
            [[c, s["global"][c], s["global"][c] / total] for c in cols])]
    for feat, groups in s["by_group"].items():
        names = list(groups)
        out.append((f"importance per group of {feat}", ["column", *names],
                    [[c, *(groups[g][c] for g in names)] for c in cols]))
    if s["proxies"]:
        rows = []
        for feat, p in s["proxies"].items():
            rows += [[feat, x["column"], x["association"], x["share"]] for x in p["proxies"]]
            rows.append([feat, "(these together)", "", p["proxies_share"]])
            rows.append([feat, f"({feat} itself)", "", p["own_share"]])
        out.append(("proxy check (training rows)", ["sensitive", "column", "association",
                                                    "share of output"], rows))
    return out
