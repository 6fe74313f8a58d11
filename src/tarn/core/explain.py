"""Why a prediction: exact TreeSHAP contributions per user column, from XGBoost itself.

XGBoost computes exact TreeSHAP for its own trees (``Booster.predict(pred_contribs=True)``):
one contribution per encoded column plus a bias column, adding up to the raw score (the
margin). The model sees encoded columns (one-hot groups, target-ordered codes, imputed
numerics: :mod:`tarn.core.features`), a person thinks in their own columns, so every
encoded column's contribution is summed back onto the column it came from; SHAP values are
additive, so the sum still adds up to the raw score. Raw score, per task: binary, the
log-odds of class 1; multiclass, one softmax log-odds per class; regression, the value.

Only the fitted Pipeline is needed (its preprocessor ``pre`` and an XGBoost estimator), so any
version, including those registered before explanations existed, is explained from the model
itself; a model that is not XGBoost raises :class:`NotExplainable` with the reason.

A faster road gives the same numbers (:func:`fast_road`): XGBoost's TreeSHAP runs one row on
one thread (~19 ms on a 562-tree depth-10 model) and scikit-learn's transform of one row costs
~4 ms, so the server prepares, once per model, an :class:`Explainer` that also holds a one-row
encoder (:mod:`tarn.core.row_encoder`) and the trees laid out for compiled TreeSHAP
(:mod:`tarn.core.treeshap`), each proved equal to the slow road on probe rows first. Reports
take the compiled TreeSHAP too when the batch is large (:func:`batch_explainer`).

The summaries built on them are here too (pure, numpy/pandas): global importance (mean
|contribution| per column), importance per sensitive group, attribution drift between two
samples, and the proxy check (the columns most associated with a sensitive feature and the
share of the model's output they carry).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from tarn.core.explain_tables import tables
from tarn.core.task import MISSING_GROUP, Task

log = logging.getLogger("tarn.explain")

PROXY_TOP = 3  # columns named per sensitive feature by the proxy check
# a batch takes tarn's TreeSHAP when rows x tree nodes reach this: compiling and checking it
# costs ~1-2 s, XGBoost's ~0.05 us per row and node (the demo model, 2,000 rows: ~17 s -> ~6
# s); smaller batches (and small models) keep XGBoost's
BATCH_NODE_ROWS = 20_000_000


class NotExplainable(ValueError):
    """This model cannot be explained here (the message says why and what still works)."""


@dataclass(frozen=True)
class Contributions:
    """Contributions of ``n`` rows: ``values`` (n, K, m) per output and user column, ``base``
    (K,) the bias per output; K = 1 (binary, regression) or the number of classes. For every
    row and output, ``values.sum(-1) + base`` is the raw score."""

    columns: tuple[str, ...]
    outputs: tuple[str, ...]  # what each output's raw score is (a class name, or the target)
    values: np.ndarray
    base: np.ndarray

    @property
    def raw(self) -> np.ndarray:
        """(n, K) the raw scores the contributions add up to."""
        return self.values.sum(axis=2) + self.base


@dataclass(frozen=True)
class Explainer:
    """A fitted Pipeline, ready to explain: its preprocessor, booster, the user column of
    every encoded column and the trees the model predicts with."""

    task: Task
    pre: object
    booster: object
    columns: tuple[str, ...]  # user columns, in the preprocessor's order
    owner: np.ndarray  # encoded column j belongs to user column owner[j]
    iteration_range: tuple[int, int]
    # the faster road (fast_road): one-row encoder, compiled TreeSHAP (a
    # tarn.core.treeshap.PathShap) and the bias per output it leaves out
    row_encoder: object = field(default=None, repr=False, compare=False)
    fast: object = field(default=None, repr=False, compare=False)
    bias: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def owner_matrix(self) -> np.ndarray:
        """(encoded, user) 0/1: encoded contributions @ it = user columns' contributions."""
        m = np.zeros((len(self.owner), len(self.columns)))
        m[np.arange(len(self.owner)), self.owner] = 1.0
        return m

    @property
    def scale(self) -> str:
        """What the raw score is, in words (shown beside the numbers)."""
        return self.task.explain_scale()

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.task.explain_outputs()

    def encode(self, X: pd.DataFrame) -> np.ndarray:
        """The design matrix the booster sees (float32, as it was fitted)."""
        return np.asarray(self.pre.transform(X), dtype=np.float32)

    def explain(self, X: pd.DataFrame) -> Contributions:
        """Contributions per user column for every row of ``X`` (the model's input frame)."""
        return self.explain_encoded(self.encode(X))

    def explain_columns(self, columns: Mapping[str, np.ndarray],
                        names: list[str]) -> Contributions:
        """:meth:`explain` for validated request columns (name -> values; ``names``: the
        model's input columns, in order): no DataFrame when the one-row encoder is prepared
        (``tarn.serve.explain.prepared``)."""
        if self.row_encoder is not None:
            return self.explain_encoded(self.row_encoder.encode(columns))
        return self.explain(pd.DataFrame(columns, columns=names))

    def explain_encoded(self, Z: np.ndarray) -> Contributions:
        raw = self.xgboost_contribs(Z) if self.fast is None else None
        if raw is None:  # (n, K, m) per encoded column, without the bias
            raw = np.stack([self.fast.contributions(z) for z in Z]) if len(Z) else \
                np.zeros((0, self.fast.outputs, self.fast.n_features))
            base = self.bias
        else:
            raw, base = raw[:, :, :-1], (raw[0, :, -1] if len(raw) else np.zeros(raw.shape[1]))
        values = raw @ self.owner_matrix  # summed back onto the user's columns
        return Contributions(self.columns, self.outputs, values, np.asarray(base, np.float64))

    def xgboost_contribs(self, Z: np.ndarray) -> np.ndarray:
        """(n, K, m + 1) XGBoost's own TreeSHAP (the last column: the bias)."""
        from xgboost import DMatrix

        dm = DMatrix(Z, feature_names=self.booster.feature_names)
        raw = np.asarray(self.booster.predict(dm, pred_contribs=True,
                                              iteration_range=self.iteration_range),
                         dtype=np.float64)
        return raw[:, None, :] if raw.ndim == 2 else raw  # (n, m + 1): one output

    def margin(self, X: pd.DataFrame) -> np.ndarray:
        """(n, K) the model's own raw score (``output_margin``): what contributions add to."""
        from xgboost import DMatrix

        dm = DMatrix(self.encode(X), feature_names=self.booster.feature_names)
        m = np.asarray(self.booster.predict(dm, output_margin=True,
                                            iteration_range=self.iteration_range),
                       dtype=np.float64)
        return m.reshape(len(X), -1)


def explainer(pipe, task: Task) -> Explainer:
    """An :class:`Explainer` for a fitted ``Pipeline([("pre", ColumnTransformer), (...,
    XGBoost estimator)])``; NotExplainable when it is not one."""
    steps = getattr(pipe, "steps", None)
    if not steps or len(steps) < 2:
        raise NotExplainable(f"the model is a {type(pipe).__name__}, not a Pipeline of a "
                             "preprocessor and an XGBoost estimator")
    pre, model = steps[0][1], steps[-1][1]
    if not hasattr(model, "get_booster"):
        raise NotExplainable(f"the model's estimator is a {type(model).__name__}, not XGBoost: "
                             "contributions are computed by XGBoost's TreeSHAP")
    booster = model.get_booster()
    columns, owner = column_owners(pre)
    return Explainer(task, pre, booster, tuple(columns), owner, _iterations(model))


def fast_road(e: Explainer, pool: Executor | None = None, threads: int = 1) -> Explainer:
    """``e`` with the faster road to the same numbers: the one-row encoder and compiled
    TreeSHAP (its trees split into ``threads`` parts, the later ones run on ``pool``), each
    kept only when it reproduces scikit-learn's transform and XGBoost's contributions on
    probe rows; else that part stays on the slow road. XGBoost sums in float32, so the
    contributions agree to ~1e-7 of their size: the tolerance is 1e-5 of the largest (at
    least 1e-5; a regressor's can be in the hundreds)."""
    from tarn.core import row_encoder, treeshap

    enc = row_encoder.row_encoder(e.pre)
    fast = treeshap.build(e.booster, e.iteration_range, pool, threads)
    if fast is None:
        return replace(e, row_encoder=enc)
    probe = treeshap.probe_rows(fast, e.booster.num_features())
    ref = e.xgboost_contribs(probe)
    mine = np.stack([fast.contributions(z) for z in probe])
    worst = float(np.abs(mine - ref[:, :, :-1]).max())
    if not worst <= 1e-5 * max(1.0, float(np.abs(ref).max())):
        log.warning("tarn's TreeSHAP differs from XGBoost's by %.2g on probe rows: "
                    "explaining with XGBoost's (slower)", worst)
        return replace(e, row_encoder=enc)
    return replace(e, row_encoder=enc, fast=fast, bias=ref[0, :, -1].copy())


def batch_explainer(pipe, task: Task, rows: int, threads: int = 1) -> Explainer:
    """:func:`explainer` for ``rows`` rows at a time (reports, attribution drift): with
    tarn's TreeSHAP on ``threads`` threads when the batch is large enough to pay for it
    (:data:`BATCH_NODE_ROWS`)."""
    from tarn.core import treeshap

    e = explainer(pipe, task)
    nodes = treeshap.node_count(e.booster)
    if rows * nodes < BATCH_NODE_ROWS:
        return e
    pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="tarn-explain") \
        if threads > 1 else None  # its idle threads end with the explainer
    return fast_road(e, pool, threads)


def _iterations(model) -> tuple[int, int]:
    """The trees the estimator's own predict uses (up to the best iteration, if early
    stopping set one)."""
    try:
        best = model.best_iteration
    except AttributeError:
        return (0, 0)
    return (0, int(best) + 1) if best is not None else (0, 0)


def column_owners(pre) -> tuple[list[str], np.ndarray]:
    """(user columns, owner index per encoded column) of a fitted ColumnTransformer: each
    transformer's output slice (``output_indices_``) is mapped onto its input columns; a
    one-hot block by the encoder's outputs per input (exact, even when one column's name
    prefixes another's), else an output named as its input, else by the longest
    ``<column>_`` prefix of its name."""
    transformers = getattr(pre, "transformers_", None)
    if transformers is None:
        raise NotExplainable(f"the preprocessor is a {type(pre).__name__}, not a fitted "
                             "ColumnTransformer: encoded columns cannot be traced to inputs")
    names_out = [str(n) for n in pre.get_feature_names_out()]
    columns: list[str] = []
    owner = np.full(len(names_out), -1, dtype=np.int64)
    for name, trans, cols in transformers:
        sl = pre.output_indices_.get(name)
        if sl is None or sl.stop <= sl.start or isinstance(cols, slice):
            continue
        cols = [str(c) for c in cols]
        index = {}
        for c in cols:
            if c not in columns:
                columns.append(c)
            index[c] = columns.index(c)
        counts = _outputs_per_input(trans, len(cols))
        if counts is not None and sum(counts) == sl.stop - sl.start:  # one-hot: exact
            owner[sl] = np.repeat([index[c] for c in cols], counts)
            continue
        for j in range(sl.start, sl.stop):
            out = names_out[j]
            src = out if out in index else max(
                (c for c in cols if out.startswith(f"{c}_")), key=len, default=None)
            if src is None:
                if sl.stop - sl.start == len(cols):  # one output per input, renamed
                    src = cols[j - sl.start]
                else:
                    raise NotExplainable(f"encoded column {out!r} of {name!r} cannot be traced "
                                         f"to one of its inputs {cols[:10]}")
            owner[j] = index[src]
    if (owner < 0).any():
        raise NotExplainable("some encoded columns belong to no input column")
    return columns, owner


def _outputs_per_input(trans, n_inputs: int) -> list[int] | None:
    """Output columns per input of a fitted one-hot encoder (the last step of a Pipeline),
    None for any other transformer. scikit-learn keeps the counts it computed at fit time
    (``_n_features_outs``: categories minus a dropped one, infrequent ones as one column)."""
    last = trans.steps[-1][1] if hasattr(trans, "steps") else trans
    counts = getattr(last, "_n_features_outs", None)
    if counts is None or len(counts) != n_inputs:
        return None
    return [int(k) for k in counts]


# ---------------------------------------------------------------------- summaries (pure)
def importance(c: Contributions) -> dict[str, float]:
    """Mean |contribution| per user column (over rows, and over classes for multiclass),
    largest first: how much of the model's output each column moves on these rows."""
    if not len(c.values):
        return {}
    mean = np.abs(c.values).mean(axis=(0, 1))
    order = np.argsort(-mean, kind="stable")
    return {c.columns[i]: float(mean[i]) for i in order}


def group_importance(c: Contributions, groups: pd.Series) -> dict[str, dict[str, float]]:
    """:func:`importance` within each group of one sensitive feature (missing values as
    their own group); every group's columns in the global order."""
    overall = list(importance(c))
    labels = groups.astype(object).where(groups.notna(), MISSING_GROUP).astype(str).to_numpy()
    out = {}
    for g in sorted(set(labels)):
        mask = labels == g
        sub = Contributions(c.columns, c.outputs, c.values[mask], c.base)
        imp = importance(sub)
        out[g] = {col: imp[col] for col in overall}
    return out


def attribution_drift(reference: dict[str, float], current: dict[str, float]) -> dict:
    """Per column, mean |contribution| on the reference rows and on the new ones, the change
    and the change in share of the whole (shares sum to 1 in each sample, so a column that
    now carries more of the output shows a positive share change); largest share change
    first. ``max_share_change`` is the headline."""
    ref_total = sum(reference.values()) or 1.0
    cur_total = sum(current.values()) or 1.0
    rows = []
    for col in reference:
        r, n = reference[col], current.get(col, 0.0)
        rows.append({"column": col, "reference": r, "current": n, "change": n - r,
                     "share_change": n / cur_total - r / ref_total})
    rows.sort(key=lambda x: -abs(x["share_change"]))
    return {"columns": rows,
            "max_share_change": max((abs(x["share_change"]) for x in rows), default=0.0)}


def association(a: pd.Series, b: pd.Series, a_numeric: bool, b_numeric: bool) -> float:
    """How much one column tells about another, in [0, 1]: Cramér's V (both categorical),
    the correlation ratio (one numeric; the categorical one groups it), |Pearson r| (both
    numeric). Missing values are a category of their own; numeric NaN rows are dropped."""
    if a_numeric and b_numeric:
        ok = a.notna() & b.notna()
        x, y = a[ok].astype(float), b[ok].astype(float)
        if len(x) < 3 or x.std() == 0 or y.std() == 0:
            return 0.0
        return float(abs(np.corrcoef(x, y)[0, 1]))
    if a_numeric or b_numeric:
        num, cat = (a, b) if a_numeric else (b, a)
        ok = num.notna()
        x = num[ok].astype(float).to_numpy()
        g = cat[ok].astype(object).where(cat[ok].notna(), MISSING_GROUP).astype(str).to_numpy()
        total = ((x - x.mean()) ** 2).sum()
        if len(x) < 3 or total == 0:
            return 0.0
        between = sum(len(x[g == k]) * (x[g == k].mean() - x.mean()) ** 2 for k in set(g))
        return float(np.sqrt(between / total))
    table = pd.crosstab(a.astype(object).where(a.notna(), MISSING_GROUP).astype(str),
                        b.astype(object).where(b.notna(), MISSING_GROUP).astype(str))
    n = table.to_numpy().sum()
    r, k = table.shape
    if n == 0 or min(r, k) < 2:
        return 0.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    chi2 = float((((table.to_numpy() - expected) ** 2) / expected).sum())
    return float(np.sqrt(chi2 / n / (min(r, k) - 1)))


def proxies(X: pd.DataFrame, sensitive: list[str], numeric: set[str],
            imp: dict[str, float], top: int = PROXY_TOP) -> dict[str, dict]:
    """The proxy check, per sensitive feature: every other model column's association with
    it (:func:`association`, on ``X``, the training rows), the ``top`` most associated, and
    the share of the model's output (``imp``, mean |contribution|) they carry, beside the
    sensitive feature's own share. A strong proxy with a large share means the model can
    use the sensitive feature without reading it."""
    total = sum(imp.values()) or 1.0
    out = {}
    for s in sensitive:
        if s not in X.columns:
            continue
        scores = {c: association(X[s], X[c], s in numeric, c in numeric)
                  for c in X.columns if c != s}
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])[:top]
        cols = [{"column": c, "association": v, "share": imp.get(c, 0.0) / total}
                for c, v in ranked]
        out[s] = {"proxies": cols,
                  "proxies_share": sum(x["share"] for x in cols),
                  "own_share": imp.get(s, 0.0) / total,
                  "measure": "Cramér's V (categorical pairs), correlation ratio (numeric "
                             "with categorical), |Pearson r| (numeric pairs)"}
    return out


def sample(X: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """At most ``n`` rows of ``X`` (a fixed random subset): TreeSHAP costs trees x depth^2
    per row, so summaries are computed on a sample."""
    return X if len(X) <= n else X.sample(n=n, random_state=seed)


SUMMARY_ROWS = 2_000  # rows explained for a report: mean |contribution| is stable by then, and
#                       XGBoost's TreeSHAP costs ~8 ms per row on a 562-tree depth-10 model
#                       (tarn's, batch_explainer: ~1.5 ms)
PROXY_ROWS = 20_000  # training rows the proxy check measures associations on


def summary(pipe, task: Task, X: pd.DataFrame, frame: pd.DataFrame, train: pd.DataFrame,
            sensitive: list[str], numeric: set[str], rows: int = SUMMARY_ROWS,
            threads: int = 1) -> dict:
    """What a report shows of the model's reasons on ``X`` (its input frame; ``frame`` the
    same rows with every contract column, for the sensitive groups): global importance,
    importance per group of each sensitive feature and the proxy check (associations on
    ``train``, the training rows), on ``threads`` threads. A model that cannot be explained
    gives its reason."""
    Xs = sample(X, rows)
    try:
        e = batch_explainer(pipe, task, len(Xs), threads)
    except NotExplainable as err:
        return {"unavailable": str(err)}
    c = e.explain(Xs)
    imp = importance(c)
    by_group = {f: group_importance(c, frame.loc[Xs.index, f])
                for f in sensitive if f in frame.columns}
    cols = [col for col in dict.fromkeys([*e.columns, *sensitive]) if col in train.columns]
    return {"rows": len(Xs), "raw_score": e.scale, "global": imp, "by_group": by_group,
            "proxies": proxies(sample(train[cols], PROXY_ROWS), sensitive, numeric, imp)}


def html_sections(s: dict | None) -> list[str]:
    """The evaluation page's explanation sections for a :func:`summary` (none without one)."""
    from tarn.core import html_report as html

    if not s:
        return []
    head = "<h2>Why: what the model's output rests on</h2>"
    if "unavailable" in s:
        return [head, f"<p class='note'>No explanations: {html.esc(s['unavailable'])}.</p>"]
    out = [head, f"<p class='note'>Mean |contribution| per input column (exact TreeSHAP by "
                 f"XGBoost, one-hot columns summed back onto their column) on "
                 f"{s['rows']:,} test rows; the raw score is the {html.esc(s['raw_score'])}."
                 "</p>"]
    for title, headers, rows in tables(s):
        out.append(f"<h3>{html.esc(title[0].upper() + title[1:])}</h3>")
        if title.startswith("proxy"):
            measure = next(iter(s["proxies"].values()))["measure"]
            out.append("<p class='note'>The columns most associated with each sensitive "
                       f"feature on the training rows ({html.esc(measure)}) and their share "
                       "of the model's output: a strong proxy with a large share lets the "
                       "model use the sensitive feature without reading it.</p>")
        out.append(html.table(headers, rows))
    return out
