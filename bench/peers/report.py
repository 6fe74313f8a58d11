"""Verdicts and the markdown table of bench_peers.py's results."""

from __future__ import annotations

DEFAULTS = ("hgb", "xgb")
LABELS = {"tarn": "tarn (tune + train)", "hgb": "HGB defaults", "xgb": "XGBoost defaults",
          "flaml": "FLAML (tarn's budget)"}


def verdicts(models: dict) -> dict:
    """Whether tarn's test loss is at most the best default model's, and FLAML's; None when
    a side is missing (a failed fit)."""
    tarn = (models.get("tarn") or {}).get("loss")
    defaults = [models[m]["loss"] for m in DEFAULTS if (models.get(m) or {}).get("loss")
                is not None]
    flaml = (models.get("flaml") or {}).get("loss")
    return {"tarn_le_best_default": None if tarn is None or not defaults
            else tarn <= min(defaults),
            "tarn_le_flaml": None if tarn is None or flaml is None else tarn <= flaml}


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def fig(v) -> str:
    """4 decimals, or 4 significant digits for a small figure (an RMSE of 0.0134)."""
    return "-" if v is None else format(v, ".4f" if abs(v) >= 0.1 or v == 0 else ".4g")


def _yes(v) -> str:
    return "n/a" if v is None else "yes" if v else "no"


def parity_text(p: dict | None) -> str:
    if not p:
        return "n/a"
    diff = _num(p.get("max_diff"), ".2g")
    return f"ok (max diff {diff})" if p.get("ok") else f"FAILED (max diff {diff})"


def table(results: list[dict]) -> str:
    """One row per model per dataset, then a verdict line per dataset."""
    lines = ["| dataset | task | train+valid / test rows | model | test loss | main metric "
             "| fit s | peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in results:
        rows = r.get("rows") or {}
        size = (f"{rows.get('train', 0) + rows.get('valid', 0):,} / {rows.get('test', 0):,}"
                if rows else "-")
        for name in ("tarn", "hgb", "xgb", "flaml"):
            m = (r.get("models") or {}).get(name)
            if m is None:
                continue
            if m.get("error"):
                lines.append(f"| {r['dataset']} | {r.get('task', '-')} | {size} | "
                             f"{LABELS[name]} | failed | - | - | - |")
                continue
            metric = f"{m['metric_name']} {fig(m['metric'])}" if m.get("metric_name") else "-"
            lines.append(f"| {r['dataset']} | {r.get('task', '-')} | {size} | {LABELS[name]} | "
                         f"{m.get('loss_name', '')} {fig(m.get('loss'))} | {metric} | "
                         f"{_num(m.get('fit_s'), '.1f')} | {_num(m.get('peak_rss_mb'), ',.0f')} |")
        v = r.get("verdict") or {}
        notes.append(f"- {r['dataset']}: tarn <= best default: "
                     f"{_yes(v.get('tarn_le_best_default'))}; tarn <= FLAML: "
                     f"{_yes(v.get('tarn_le_flaml'))}; parity: {parity_text(r.get('parity'))}"
                     + "".join(f"; error: {e}" for e in r.get("errors", [])))
    return "\n".join(lines + [""] + notes)
