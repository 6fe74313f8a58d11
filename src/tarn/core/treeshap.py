"""Exact path-dependent TreeSHAP of an XGBoost booster for a few rows, in numpy.

Why not ``Booster.predict(pred_contribs=True)`` for one row: XGBoost's TreeSHAP costs
O(leaves x depth^2) per tree and runs one row on one thread (~19 ms on a 562-tree depth-10
model, where the prediction takes 0.5 ms). The same values follow from the integral form of
the Shapley weights, ``k! (d-k-1)! / d! = integral_0^1 u^k (1-u)^(d-k-1) du``: a leaf ``l``
with value ``v`` whose path holds the distinct features ``F`` (``z_j``: the cover fraction
along the path, ``o_j``: 1 when the row follows the path at every split on ``j``, else 0)
gives feature ``i``

    v (o_i - z_i) integral_0^1 prod_{j in F, j != i} (z_j (1 - u) + o_j u) du,

a polynomial of degree < depth, integrated exactly by Gauss-Legendre at ``ceil(depth / 2)``
points. Evaluated at those points, the products are computed once per node (top-down), the
leaves' values summed once per node (bottom-up), and each split contributes its features'
share: O(nodes x depth / 2) per row, level by level across all trees at once (numpy over
arrays, no Python loop over nodes). A feature split on twice along a path is merged as
TreeSHAP merges it (``z`` and ``o`` multiplied), and its contribution is taken at its last
split. Everything that does not depend on the row (the trees in level order, cover
fractions, the earlier split on the same feature, quadrature points) is built once per model.

:func:`build` returns None for what it does not cover (DART, linear or multi-output trees,
categorical splits, a child with no cover), and the caller keeps XGBoost's own TreeSHAP.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class _Level:
    nodes: slice  # this level's nodes in the level-ordered arrays
    internal: np.ndarray  # positions (within the level) of its split nodes, children order
    merged: np.ndarray  # nodes of this level whose feature was split on higher up the path


class PathShap:
    """One model's trees, laid out for :meth:`contributions` (see the module docstring).

    Arrays are per node in level order (every tree's root first, then every depth-1 node,
    ...; a split's two children adjacent); values at the quadrature points are (Q, nodes),
    float32 (the booster's own precision: the sums stay within ~1e-6 of XGBoost's)."""

    def __init__(self, levels: list[_Level], *, feature, threshold, default_left, parent,
                 is_left, z_merged, prev, value, edge_weight_index, outputs: int,
                 n_features: int, points: np.ndarray, weights: np.ndarray) -> None:
        self.levels = levels
        self.feature, self.threshold, self.default_left = feature, threshold, default_left
        self.parent, self.is_left, self.prev = parent, is_left, prev
        self.z_merged = z_merged.astype(np.float32)
        self.value = value.astype(np.float32)
        self.edge_weight_index = edge_weight_index
        self.outputs, self.n_features = outputs, n_features
        self.points = points.astype(np.float32)[:, None]
        self.weights = weights.astype(np.float32)
        self.merged = np.flatnonzero(prev >= 0)
        self.merged_prev = prev[self.merged]
        by_prev = np.argsort(self.merged_prev, kind="stable")  # next splits grouped by the
        self.next_split = self.merged[by_prev]  # one above them, for np.add.reduceat
        grouped = self.merged_prev[by_prev]
        starts = np.flatnonzero(np.r_[True, np.diff(grouped) != 0]) if len(grouped) else \
            np.zeros(0, np.int64)
        self.next_starts = starts
        self.next_owner = grouped[starts]
        self.roots = levels[0].nodes
        self.level_parents = [parent[lv.nodes] for lv in levels[1:]]
        self.prev_or_one = np.where(prev >= 0, prev, len(prev))  # no earlier split: 1
        self.owner_position = np.zeros(len(prev), np.int64)  # next_owner's rank + 1, or 0
        self.owner_position[self.next_owner] = np.arange(1, len(self.next_owner) + 1)
        self.sum_positions = []  # per level but the last: each node's split rank + 1, or 0
        for lv in levels[:-1]:
            pos = np.zeros(lv.nodes.stop - lv.nodes.start, np.int64)
            pos[lv.internal] = np.arange(1, len(lv.internal) + 1)
            self.sum_positions.append(pos)
        self.is_split = np.zeros(len(parent), bool)
        self.is_split[parent[parent != np.arange(len(parent))]] = True

    def contributions(self, row: np.ndarray) -> np.ndarray:
        """(outputs, n_features) TreeSHAP values of one encoded row (float32, as the booster
        sees it), without the bias."""
        xv = row[self.feature]
        left = xv < self.threshold
        if np.isnan(row).any():
            left = np.where(np.isnan(xv), self.default_left, left)
        o = (left[self.parent] == self.is_left).astype(np.float32)  # the split into a node
        o[self.roots] = 1.0
        for lv in self.levels[1:]:  # a feature split on again: the row must follow both
            if len(lv.merged):
                o[lv.merged] *= o[self.prev[lv.merged]]
        delta = o - self.z_merged
        n = len(delta)
        g = np.empty((len(self.weights), n + 1), np.float32)  # the last column: ones
        np.multiply(self.points, delta, out=g[:, :n])  # (Q, nodes): z (1 - u) + o u
        g[:, :n] += self.z_merged
        g[:, n] = 1.0
        # the product so far, divided by the feature's earlier factor; np.take costs a third
        # of fancy indexing here
        G = g[:, :n] / np.take(g, self.prev_or_one, axis=1)
        g = g[:, :n]
        for lv, parents in zip(self.levels[1:], self.level_parents, strict=True):
            G[:, lv.nodes] *= np.take(G, parents, axis=1)  # top-down products
        H = G
        H *= self.value  # leaves' values times their products; splits are summed next
        for lv, below, pos in zip(self.levels[-2::-1], self.levels[:0:-1],
                                  self.sum_positions[::-1], strict=False):
            if len(lv.internal):  # a split's H: its two children's (leaves add a zero)
                kids = H[:, below.nodes]
                sums = np.zeros((len(self.weights), len(lv.internal) + 1), np.float32)
                np.add(kids[:, 0::2], kids[:, 1::2], out=sums[:, 1:])
                H[:, lv.nodes] += np.take(sums, pos, axis=1)
        if len(self.next_split):  # leave out the leaves whose feature is split again below
            below = np.zeros((len(self.weights), len(self.next_owner) + 1), np.float32)
            below[:, 1:] = np.add.reduceat(np.take(H, self.next_split, axis=1),
                                           self.next_starts, axis=1)
            H -= np.take(below, self.owner_position, axis=1)
        H /= g
        term = H[0] * self.weights[0]
        for q in range(1, len(self.weights)):
            term += H[q] * self.weights[q]
        term *= delta
        term[self.roots] = 0.0
        flat = np.bincount(self.edge_weight_index, weights=term,
                           minlength=self.outputs * self.n_features)
        return flat.reshape(self.outputs, self.n_features)


def build(booster, iteration_range: tuple[int, int] = (0, 0)) -> PathShap | None:
    """The :class:`PathShap` of a gbtree booster's trees in ``iteration_range`` (as
    ``Booster.predict`` takes it), or None when the model is outside what it computes."""
    model = json.loads(booster.save_raw("json"))
    learner = model["learner"]
    gb = learner["gradient_booster"]
    if gb.get("name") != "gbtree":
        return None
    trees_model = gb["model"]
    n_features = int(learner["learner_model_param"]["num_feature"])
    if int(learner["learner_model_param"].get("num_target", "1")) > 1:
        return None
    indptr = trees_model.get("iteration_indptr")
    trees, info = trees_model["trees"], trees_model["tree_info"]
    begin, end = iteration_range
    if indptr and (begin or end):
        trees = trees[indptr[begin]:indptr[end if end else len(indptr) - 1]]
        info = info[indptr[begin]:indptr[end if end else len(indptr) - 1]]
    elif begin or end:
        return None
    outputs = max(1, int(learner["learner_model_param"].get("num_class", "0")))
    if not trees:
        return None
    for t in trees:
        if int(t["tree_param"].get("size_leaf_vector", "1")) > 1 or t["categories_nodes"] \
                or any(t["split_type"]):
            return None

    # every tree's nodes, level by level across all trees; a split's children adjacent
    level = [(ti, 0) for ti in range(len(trees))]
    order: list[list[tuple[int, int]]] = []
    max_depth = 0
    while level:
        order.append(level)
        nxt = []
        for ti, n in level:
            lc = trees[ti]["left_children"][n]
            if lc != -1:
                nxt += [(ti, lc), (ti, trees[ti]["right_children"][n])]
        level = nxt
        max_depth = len(order) - 1
    flat = [tn for lv in order for tn in lv]
    index = {tn: i for i, tn in enumerate(flat)}
    N = len(flat)
    feature = np.zeros(N, np.int64)
    threshold = np.zeros(N, np.float32)
    default_left = np.zeros(N, bool)
    parent = np.zeros(N, np.int64)
    is_left = np.ones(N, bool)
    z = np.ones(N)
    value = np.zeros(N)
    group = np.zeros(N, np.int64)
    prev = np.full(N, -1, np.int64)
    last_split: dict[int, dict[int, int]] = {}  # node -> {feature: node below its last split}
    for i, (ti, n) in enumerate(flat):
        t = trees[ti]
        group[i] = info[ti]
        if t["left_children"][n] == -1:
            value[i] = t["split_conditions"][n]
        else:
            feature[i] = t["split_indices"][n]
            threshold[i] = t["split_conditions"][n]
            default_left[i] = bool(t["default_left"][n])
        p = t["parents"][n]
        if n == 0:
            parent[i] = i
            last_split[i] = {}
            continue
        pi = index[(ti, p)]
        parent[i] = pi
        is_left[i] = t["left_children"][p] == n
        hp, hc = t["sum_hessian"][p], t["sum_hessian"][n]
        if not hp > 0 or not hc > 0:
            return None
        z[i] = hc / hp
        f = int(feature[pi])
        seen = last_split[pi]
        prev[i] = seen.get(f, -1)
        last_split[i] = {**seen, f: i}
    z_merged = z.copy()
    for lv in order[1:]:  # top-down: a repeated feature's fractions multiply
        for tn in lv:
            i = index[tn]
            if prev[i] >= 0:
                z_merged[i] *= z_merged[prev[i]]
    starts = np.cumsum([0] + [len(lv) for lv in order])
    levels = []
    for k, lv in enumerate(order):
        s = slice(int(starts[k]), int(starts[k + 1]))
        internal = np.array([j for j, (ti, n) in enumerate(lv)
                             if trees[ti]["left_children"][n] != -1], np.int64)
        ids = np.arange(s.start, s.stop)
        levels.append(_Level(s, internal, ids[prev[s] >= 0]))
    q = max(1, (max_depth + 1) // 2)  # degree < max_depth: exact with ceil(depth / 2) points
    x, w = np.polynomial.legendre.leggauss(q)
    return PathShap(levels, feature=feature, threshold=threshold, default_left=default_left,
                    parent=parent, is_left=is_left, z_merged=z_merged, prev=prev,
                    value=value, edge_weight_index=group * n_features + feature[parent],
                    outputs=outputs, n_features=n_features, points=(x + 1) / 2,
                    weights=w / 2)


def probe_rows(shap: PathShap, n_features: int, rows: int = 6, seed: int = 0) -> np.ndarray:
    """Rows that take both sides of many splits (each feature at one of its split values,
    half of them nudged below it) and the missing-value side (a row of NaN): what
    :func:`build`'s caller compares with XGBoost's TreeSHAP before trusting it."""
    rng = np.random.default_rng(seed)
    out = np.zeros((rows, n_features), dtype=np.float32)
    split = shap.is_split
    by_feature = {int(f): shap.threshold[split & (shap.feature == f)]
                  for f in np.unique(shap.feature[split])}
    for r in range(rows - 1):
        for f, thr in by_feature.items():
            t = thr[rng.integers(len(thr))]
            out[r, f] = np.nextafter(t, np.float32(-np.inf)) if rng.random() < 0.5 else t
    out[-1] = np.nan
    return out
