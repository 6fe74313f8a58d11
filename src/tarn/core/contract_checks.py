"""Checks on the user's table before anything trains (``tarn init``): the columns that would
mislead a model or break on new data, each with a measured reason.

Pure: text values in (as the ETL reads them), facts out; :mod:`tarn.core.infer` turns them into
the contract's types and the findings ``tarn init`` prints, and decides what is excluded.

- **Leakage.** Each column alone predicts the target out of fold: its values are binned (numbers:
  up to :data:`LEAK_BINS` quantile bins; labels: one bin per value; missing: a bin of its own)
  and each bin predicts the smoothed target mean (class frequencies for multiclass) learnt on
  the other folds, a one-level histogram tree. Rows: a seeded sample of at most
  :data:`LEAK_ROWS`, so 300,000 rows take about a second. Scores: AUC (binary), balanced
  accuracy (multiclass), R2 (regression). A column that scores near-perfect alone
  (:data:`NEAR_PERFECT`), or far above every other column, is likely leakage; so is a column
  that is a function of the target (one value per class, or a monotone function of a number).
  An identifier scores nothing out of fold: its values are unseen in the held-out fold.
  Leaks that take two columns (an arrival time with the scheduled one) score little alone, so
  the **difference of every two numeric columns** is scored the same way: a near-perfect pair
  names the column of the two that scores higher alone.
- **Identifiers**: near-unique text, unique integers that increase with the row or fill a
  dense run (row numbers), identifier-like names, text of thousands of values most of them
  rare.
- **Constants** (one value in every row) and near-constants (one value in at least
  :data:`NEAR_CONSTANT` of the rows, missing counted as a value).
- **Timestamps**: text that parses as dates or date-times.
- **Integer codes**: few distinct integers with gaps, or named like a code, not like a count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

NEAR_CONSTANT = 0.995  # one value in at least this share of rows: near-constant
ID_SHARE = 0.9  # distinct / rows at least this: near-unique
MIN_ROWS = 20  # fewer present values than this say nothing about uniqueness
HIGH_CARDINALITY = 1_000  # text with at least this many values may name individual rows
RARE_ROWS = 20  # a value seen in fewer rows than this teaches a model little
MAX_CODES = 20  # integer codes: at most this many distinct values
TIMESTAMP_SHARE = 0.95  # share of (a sample of) values that must parse as dates
LEAK_ROWS = 20_000  # rows sampled for the single-column scores
LEAK_FOLDS = 3
LEAK_BINS = 64
# a column that alone scores at least this out of fold is likely leakage
NEAR_PERFECT = {"binary": 0.99, "multiclass": 0.99, "regression": 0.95}
METRIC = {"binary": "AUC", "multiclass": "balanced accuracy", "regression": "R2"}
FAR_SKILL = 0.8  # ...and so is one with at least this skill and twice any other column's
MISSING = "(missing)"

# a date (ISO, or day/month/year), optionally a time; or a year-month
_DATE = re.compile(r"^(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4})"
                   r"([ T]\d{1,2}:\d{2}(:\d{2}([.,]\d+)?)?\s*(Z|[AaPp][Mm]|[+-]\d{2}:?\d{2})?)?$"
                   r"|^\d{4}-\d{2}$")
_ID_WORDS = {"id", "ids", "uuid", "guid", "key", "idx", "index"}
_CODE_WORDS = {"code", "codes", "type", "kind", "class", "cat", "category", "group", "status",
               "state", "region", "zone", "district", "dept", "department", "station", "site",
               "carrier", "airline", "origin", "dest", "sector", "branch", "segment"}
_COUNT_WORDS = {"n", "num", "number", "count", "cnt", "qty", "quantity", "total", "size", "age",
                "year", "years", "month", "months", "week", "weeks", "day", "days", "hour",
                "hours", "minute", "minutes", "sec", "seconds", "times", "visits", "rooms",
                "beds", "baths", "children", "kids", "people", "persons", "floors", "doors",
                "score", "rating", "rank", "level", "grade", "pct", "percent", "rate", "price",
                "amount", "weight", "height", "length", "width", "depth", "dist", "distance"}


@dataclass(frozen=True)
class Finding:
    """One column ``tarn init`` warns about: what it is, the measured reason, and whether it
    is excluded from the features by default."""

    column: str  # contract name
    kind: str  # leakage, identifier, constant, near-constant, timestamp, codes
    reason: str
    exclude: bool


def _words(name: str) -> set[str]:
    return set(re.split(r"[^a-z0-9]+", name.lower())) - {""}


# ------------------------------------------------------------------------- one column
def timestamps(present: pd.Series) -> tuple[str, str] | None:
    """(first, last) when the text values parse as dates or date-times, else None. Judged on
    up to 1,000 distinct values; each must look like a date (digits and separators), so words
    such as ``May`` (which a lenient parser reads as a date) are not timestamps."""
    sample = pd.Series(present.iloc[:20_000].unique()[:1_000], dtype=object).astype(str)
    if sample.empty or sample.str.fullmatch(_DATE).mean() < TIMESTAMP_SHARE:
        return None
    try:
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
        if parsed.notna().mean() < TIMESTAMP_SHARE:
            return None
        whole = pd.to_datetime(present, errors="coerce", format="ISO8601")
        if whole.notna().mean() < TIMESTAMP_SHARE:  # not ISO: the sample gives the range
            whole = parsed
    except (ValueError, TypeError, OverflowError):  # e.g. time zones mixed with naive times
        return None
    lo, hi = whole.min(), whole.max()
    return str(lo), str(hi)


def dominant(values: pd.Series, markers: set[str]) -> tuple[str, float]:
    """(most frequent value, its share of rows); missing markers count as one value."""
    counts = values.where(~values.isin(markers), MISSING).value_counts()
    return str(counts.index[0]), float(counts.iloc[0]) / max(1, len(values))


def identifier(name: str, present: pd.Series, numbers: np.ndarray | None,
               integer: bool = False) -> str | None:
    """Why a column looks like it names rows rather than describes them, or None.
    ``numbers``: the values (in row order) when every one is a number, None for text;
    ``integer``: every one an integer. Other numbers are measurements, never identifiers."""
    n = len(present)
    if n < MIN_ROWS or (numbers is not None and not integer):
        return None
    integers = numbers
    distinct = int(present.nunique())
    named = bool(_words(name) & _ID_WORDS)
    if integers is None:
        if distinct >= ID_SHARE * n:
            return f"near-unique text ({distinct:,} distinct values in {n:,} rows)"
        if named and distinct >= 0.5 * n:
            return f"named like an identifier, {distinct:,} distinct values in {n:,} rows"
        if distinct >= HIGH_CARDINALITY:
            counts = present.value_counts()
            rare = float(counts[counts < RARE_ROWS].sum()) / n
            if rare >= 0.5:
                return (f"{distinct:,} distinct values, {rare:.0%} of the rows in values seen "
                        f"fewer than {RARE_ROWS} times")
        return None
    if distinct == n:
        lo, hi = int(integers.min()), int(integers.max())
        if float(np.mean(np.diff(integers) > 0)) >= 0.99:
            return f"unique integers that increase with the row ({lo:,}..{hi:,})"
        if hi - lo + 1 <= 1.5 * n:
            return f"unique integers filling {lo:,}..{hi:,}: a row number"
        if named:
            return f"unique integers, named like an identifier ({n:,} rows)"
    elif named and distinct >= 0.5 * n:
        return f"named like an identifier, {distinct:,} distinct integers in {n:,} rows"
    return None


def high_cardinality(present: pd.Series) -> str | None:
    """Why text with thousands of values, not an identifier by the rules above, may still
    name an entity (an aircraft, a shop, a doctor) rather than describe the row, or None. It
    is kept (one column of target-ordered codes, see core/features), but said: a model that
    learns entities does not carry over to new ones."""
    distinct = int(present.nunique())
    if distinct < HIGH_CARDINALITY:
        return None
    return (f"{distinct:,} distinct values (an entity such as a device, a place or a person?): "
            "kept as one column of codes; a model that learns entities does not carry over "
            "to new ones")


def integer_codes(name: str, integers: np.ndarray) -> str | None:
    """Why a few distinct integers look like codes (categories) rather than a count or a
    measure, or None: at most :data:`MAX_CODES` values (and at most one per 20 rows), named
    like a code, or with gaps (fewer than half the integers of their span) that are not round
    numbers (multiples of 5: a measure's grid) nor years, and not named like a count."""
    values = np.unique(integers)
    k = len(values)
    if not 3 <= k <= MAX_CODES or k > 0.05 * len(integers):
        return None
    words = _words(name)
    if words & _COUNT_WORDS:
        return None
    lo, hi = int(values[0]), int(values[-1])
    if words & _CODE_WORDS:
        return f"{k} distinct integers, named like a code"
    round_numbers = hi >= 10 and not np.any(values % 5)  # 50, 75, 100: a measure's grid
    if k <= 0.5 * (hi - lo + 1) and not round_numbers and not (1900 <= lo and hi <= 2100):
        return f"{k} distinct integers with gaps ({lo}..{hi})"
    return None


def function_of_target(values: pd.Series, target: pd.Series, task: str,
                       numeric: bool = True) -> str | None:
    """Why a column is the target in disguise, or None: one value per class (classification),
    or equal to / a monotone function of the target (regression; ``numeric`` columns only).
    Both series are text, aligned, rows with a target only."""
    if (task == "regression" and not numeric) or values.nunique() < 2:
        return None
    if task != "regression":
        if int(values.groupby(target.to_numpy()).nunique().max()) <= 1:
            same = values.nunique() == target.nunique()
            return ("one value per target class and back: it determines the target exactly"
                    if same else "one value per target class: a function of the target")
        return None
    x, y = pd.to_numeric(values, errors="coerce"), pd.to_numeric(target, errors="coerce")
    ok = x.notna() & y.notna()
    if ok.mean() < 0.99 or ok.sum() < MIN_ROWS:
        return None
    if (x[ok] == y[ok]).all():
        return "equal to the target"
    rho = x[ok].corr(y[ok], method="spearman")
    if abs(rho) >= 0.999:
        return f"a monotone function of the target (Spearman {rho:.4f})"
    return None


# ------------------------------------------------------------------------- leakage
def _bins(values: pd.Series, numeric: bool) -> np.ndarray:
    """Codes 0..B-1 for one column: numbers in up to LEAK_BINS quantile bins (exact values
    when fewer), labels one code each; missing values share code 0."""
    if numeric:
        x = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
        ok = np.isfinite(x)
        if not ok.any():
            return np.zeros(len(x), dtype=np.int64)
        uniq = np.unique(x[ok])
        edges = uniq[1:] if len(uniq) <= LEAK_BINS else np.unique(
            np.quantile(x[ok], np.linspace(0, 1, LEAK_BINS + 1)[1:-1]))
        codes = np.searchsorted(edges, np.where(ok, x, 0.0), side="right") + 1
        return np.where(ok, codes, 0)
    codes, _ = pd.factorize(values.to_numpy(dtype=object))
    return codes.astype(np.int64) + 1  # factorize gives -1 for None only


def _out_of_fold(codes: np.ndarray, y: np.ndarray, folds: np.ndarray, task: str,
                 n_classes: int) -> np.ndarray:
    """Each row's prediction from its bin's target statistics on the other folds, smoothed
    by one pseudo-row of the prior (a bin unseen elsewhere predicts the prior)."""
    bins = int(codes.max()) + 1
    out = np.empty(len(y), dtype=np.float64)
    for f in range(LEAK_FOLDS):
        test = folds == f
        train = ~test
        if not test.any() or not train.any():
            continue
        count = np.bincount(codes[train], minlength=bins).astype(np.float64)
        if task == "multiclass":
            yi = y[train].astype(np.int64)
            table = np.bincount(codes[train] * n_classes + yi,
                                minlength=bins * n_classes).reshape(bins, n_classes)
            prior = np.bincount(yi, minlength=n_classes) / len(yi)
            out[test] = np.argmax(table[codes[test]] + prior, axis=1)
        else:
            total = np.bincount(codes[train], weights=y[train], minlength=bins)
            prior = float(y[train].mean())
            out[test] = ((total + prior) / (count + 1.0))[codes[test]]
    return out


def _score(y: np.ndarray, pred: np.ndarray, task: str) -> float:
    from sklearn.metrics import balanced_accuracy_score, r2_score, roc_auc_score

    if task == "binary":
        return float(roc_auc_score(y, pred))
    if task == "multiclass":
        return float(balanced_accuracy_score(y, pred.astype(np.int64)))
    return float(r2_score(y, pred))


def sample_rows(n: int, seed: int = 0) -> np.ndarray:
    """Positions of a seeded sample of at most :data:`LEAK_ROWS` of ``n`` rows, in order."""
    if n <= LEAK_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, LEAK_ROWS, replace=False))


def single_column_scores(features: pd.DataFrame, numeric: set[str], y: np.ndarray, task: str,
                         seed: int = 0) -> dict[str, float]:
    """Each column's out-of-fold score alone (see the module docstring), on a seeded sample of
    at most :data:`LEAK_ROWS` rows. ``features``: text values, rows with a target only;
    ``y``: 0/1 (binary), 0..K-1 (multiclass) or numbers (regression), aligned."""
    if len(y) < 2 * LEAK_FOLDS:
        return {}
    rows = sample_rows(len(y), seed)
    y = np.asarray(y)[rows]
    if len(np.unique(y)) < 2:
        return {}
    folds = np.random.default_rng(seed + 1).permutation(len(rows)) % LEAK_FOLDS
    n_classes = int(y.max()) + 1 if task == "multiclass" else 0
    frame = features.iloc[rows]
    return {c: _score(y, _out_of_fold(_bins(frame[c], c in numeric), y, folds, task, n_classes),
                      task) for c in frame.columns}


PAIR_ROWS = 5_000  # rows sampled for the scores of differences of two columns
PAIR_MAX_COLUMNS = 40  # numeric columns paired (the first ones): at most 780 differences


def pair_scores(features: pd.DataFrame, numeric: set[str], y: np.ndarray, task: str,
                seed: int = 0) -> dict[tuple[str, str], float]:
    """Each difference of two numeric columns scored alone, as a column is (binned, out of
    fold), on a seeded sample of at most :data:`PAIR_ROWS` rows: an arrival time minus the
    scheduled one is the delay itself, though each alone says little."""
    cols = [c for c in features.columns if c in numeric][:PAIR_MAX_COLUMNS]
    if len(y) < 2 * LEAK_FOLDS or len(cols) < 2:
        return {}
    rows = sample_rows(len(y), seed)[:PAIR_ROWS] if len(y) > PAIR_ROWS else np.arange(len(y))
    y = np.asarray(y)[rows]
    if len(np.unique(y)) < 2:
        return {}
    values = {c: pd.to_numeric(features[c].iloc[rows], errors="coerce") for c in cols}
    folds = np.random.default_rng(seed + 1).permutation(len(rows)) % LEAK_FOLDS
    n_classes = int(y.max()) + 1 if task == "multiclass" else 0
    return {(a, b): _score(y, _out_of_fold(_bins(values[a] - values[b], True), y, folds, task,
                                           n_classes), task)
            for i, a in enumerate(cols) for b in cols[i + 1:]}


def pair_leakage(pairs: dict[tuple[str, str], float], single: dict[str, float],
                 task: str) -> dict[str, str]:
    """Column -> why, for the pairs whose difference predicts the target near-perfectly while
    neither column does alone: the pair's column that scores higher alone is named as the
    likely leak (the one known only after the outcome usually carries more of it)."""
    metric = METRIC[task]
    out: dict[str, str] = {}
    for (a, b), score in sorted(pairs.items(), key=lambda kv: -kv[1]):
        if score < NEAR_PERFECT[task] or single.get(a, 0) >= NEAR_PERFECT[task] or \
                single.get(b, 0) >= NEAR_PERFECT[task]:
            continue
        leak, other = (a, b) if single.get(a, 0) >= single.get(b, 0) else (b, a)
        if leak in out or other in out:
            continue
        out[leak] = (f"{a} - {b} predicts the target with {metric} {score:.3f} (alone: "
                     f"{leak} {single.get(leak, float('nan')):.3f}, {other} "
                     f"{single.get(other, float('nan')):.3f}): {leak} is likely known only "
                     f"after the outcome ({other} kept)")
    return out


def skill(score: float, task: str, n_classes: int = 2) -> float:
    """A score on one scale, 0 = no better than chance, 1 = perfect."""
    if task == "binary":
        return 2.0 * score - 1.0
    if task == "multiclass":
        chance = 1.0 / max(2, n_classes)
        return (score - chance) / (1.0 - chance)
    return score


def leakage(scores: dict[str, float], task: str, n_classes: int = 2) -> dict[str, str]:
    """Column -> why it is likely leakage, from the single-column scores: near-perfect alone,
    or with at least :data:`FAR_SKILL` and twice the skill of the best other column."""
    metric = METRIC[task]
    out = {}
    for col, score in scores.items():
        others = {c: s for c, s in scores.items() if c != col}
        best = max(others, key=others.__getitem__) if others else None
        rest = f" (the best other column, {best}: {others[best]:.3f})" if best else ""
        mine = skill(score, task, n_classes)
        theirs = max(0.0, skill(others[best], task, n_classes)) if best else 0.0
        if score >= NEAR_PERFECT[task]:
            out[col] = f"alone it predicts the target with {metric} {score:.3f}{rest}"
        elif mine >= FAR_SKILL and mine >= 2 * theirs:
            out[col] = (f"alone it predicts the target far better than the rest: {metric} "
                        f"{score:.3f}{rest}")
    return out
