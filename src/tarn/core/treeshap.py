"""Exact path-dependent TreeSHAP of an XGBoost booster for a few rows, compiled by numba.

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
share: O(nodes x depth / 2) per row. A feature split on twice along a path is merged as
TreeSHAP merges it (``z`` and ``o`` multiplied), and its contribution is taken at its last
split. Everything that does not depend on the row (each tree's nodes in level order, cover
fractions, the earlier split on the same feature, quadrature points) is built once per model.

Why numba: the two passes are a loop over nodes with a parent lookup each. In numpy they cost
~15 passes over (points x nodes) arrays that do not fit in cache (~6.5 ms a row of the demo
model, 152,266 nodes); compiled, one tree at a time in scratch that stays in cache, with
unsigned indices (signed ones make numba emit negative-index wraparound) and each node's
fields in their narrowest types, ~2.7 ms on one core, and :meth:`PathShap.contributions`
shares the trees with a helper thread (the kernel releases the GIL): ~1.5 ms on two. Without
numba, :func:`build` returns None and the caller keeps XGBoost's TreeSHAP (same values,
slower).

:func:`build` also returns None for what it does not cover (DART, linear or multi-output trees,
categorical splits, a child with no cover).
"""

from __future__ import annotations

import json
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import cache

import numpy as np


@cache
def _kernel(points: int):
    """The compiled kernel for ``points`` quadrature points (a constant, so the inner loops
    unroll), or None when numba is not installed."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; the slow road still works
        return None
    QC = np.uint64(points)

    @numba.njit(nogil=True, error_model="numpy")
    def kernel(row, start, chunks, step, greedy, state, par, prev, is_left, feature,
               threshold, default_left, zm, value, is_leaf, ewi, u, w, maxn,
               out):  # pragma: no cover - compiled
        G = np.empty((maxn, QC))  # product of the path's factors down to a node
        R = np.empty((maxn, QC))  # 1 / a node's own factor
        H = np.empty((maxn, QC))  # leaves' values x their products, summed under a node
        S = np.empty((maxn, QC))  # the part of H under a later split on the same feature
        o = np.empty(maxn, np.uint8)  # the row follows the path into the node
        go_left = np.empty(maxn, np.uint8)
        local = np.empty(out.shape[1])
        K = len(chunks) - 1
        for j in range(K):  # chunks of trees in ``step``'s direction, each claimed in ``state``
            c = j if step > 0 else K - 1 - j
            if state[c] == 2 or (state[c] == 1 and not greedy):
                if greedy:
                    continue  # done by the other thread
                break  # the other thread got here: it computes the rest
            state[c] = 1
            local[:] = 0.0
            for t in range(chunks[c], chunks[c + 1]):
                s = start[t]
                n = start[t + 1] - s
                o[0] = 1
                for q in range(QC):
                    G[0, q] = 1.0
                    R[0, q] = 1.0
                for kk in range(n):  # top-down: parents come before their children
                    k = np.uint64(kk)  # unsigned indices: no negative-index wraparound code
                    i = np.uint64(s + kk)
                    if kk > 0:
                        p = np.uint64(par[i])
                        pv = prev[i]
                        ok = 1 if go_left[p] == is_left[i] else 0
                        if pv >= 0:
                            ok &= o[np.uint64(pv)]
                        o[k] = ok
                        z = zm[i]
                        d = ok - z
                        for q in range(QC):
                            g = z + u[q] * d
                            R[k, q] = 1.0 / g
                            G[k, q] = G[p, q] * g
                        if pv >= 0:  # the feature's earlier factor is replaced by this one
                            upv = np.uint64(pv)
                            for q in range(QC):
                                G[k, q] *= R[upv, q]
                    if is_leaf[i]:
                        v = value[i]
                        for q in range(QC):
                            H[k, q] = v * G[k, q]
                            S[k, q] = 0.0
                    else:
                        x = row[np.uint64(feature[i])]
                        if np.isnan(x):
                            go_left[k] = default_left[i]
                        else:
                            go_left[k] = 1 if x < threshold[i] else 0
                        for q in range(QC):
                            H[k, q] = 0.0
                            S[k, q] = 0.0
                for kk in range(n - 1, 0, -1):  # bottom-up: children before their parents
                    k = np.uint64(kk)
                    i = np.uint64(s + kk)
                    p = np.uint64(par[i])
                    pv = prev[i]
                    acc = 0.0
                    for q in range(QC):
                        h = H[k, q]
                        acc += w[q] * (h - S[k, q]) * R[k, q]
                        H[p, q] += h
                    if pv >= 0:
                        upv = np.uint64(pv)
                        for q in range(QC):
                            S[upv, q] += H[k, q]
                    local[np.uint64(ewi[i])] += acc * (o[k] - zm[i])
            out[c, :] = local  # the same values whichever thread computes the chunk
            state[c] = 2

    return kernel


@dataclass(frozen=True)
class PathShap:
    """One model's trees, laid out for :meth:`contributions` (see the module docstring).

    Arrays are per node, tree after tree, each tree in level order; ``par`` and ``prev`` are
    positions within the node's tree, so a tree's scratch is small enough to stay in cache."""

    start: np.ndarray  # (trees + 1,) first node of each tree
    par: np.ndarray  # parent's position in the tree (the root: itself)
    prev: np.ndarray  # the node below the path's earlier split on this split's feature, or -1
    is_left: np.ndarray
    feature: np.ndarray  # a split node's feature
    threshold: np.ndarray  # float32: the row goes left when x < threshold (XGBoost's rule)
    default_left: np.ndarray  # where a missing value goes
    z_merged: np.ndarray  # cover fraction into the node, times the feature's earlier ones
    value: np.ndarray  # a leaf's value
    is_leaf: np.ndarray
    edge_weight_index: np.ndarray  # output x n_features + the parent's feature
    points: np.ndarray
    weights: np.ndarray
    max_nodes: int
    outputs: int
    n_features: int
    chunks: np.ndarray  # (K + 1,) first tree of each chunk: about as many nodes each
    pool: Executor | None = None  # where the helper threads run
    helpers: int = 0  # threads on the pool that share a row's chunks with the caller

    def contributions(self, row: np.ndarray) -> np.ndarray:
        """(outputs, n_features) TreeSHAP values of one encoded row (float32, as the booster
        sees it), without the bias. Thread-safe: scratch and state are per call.

        The calling thread takes the chunks of trees from the first, each helper from the
        last, each claiming a chunk before computing it; a helper stops where the caller
        has been. The caller never waits for a helper: it computes every chunk not done
        yet, a claimed one included (both write the same values), so a helper scheduled late
        costs nothing but its share of the speed-up."""
        row = np.ascontiguousarray(row, dtype=np.float32)
        K = len(self.chunks) - 1
        state = np.zeros(K, np.uint8)  # 0 free, 1 claimed, 2 done
        out = np.zeros((K, self.outputs * self.n_features))
        kernel = _kernel(len(self.points))
        args = (self.par, self.prev, self.is_left, self.feature, self.threshold,
                self.default_left, self.z_merged, self.value, self.is_leaf,
                self.edge_weight_index, self.points, self.weights, self.max_nodes, out)
        if self.pool is not None:
            for _ in range(self.helpers):
                self.pool.submit(kernel, row, self.start, self.chunks, -1, False, state, *args)
        kernel(row, self.start, self.chunks, 1, True, state, *args)
        return out.sum(axis=0).reshape(self.outputs, self.n_features)


def _narrow(a: np.ndarray) -> np.ndarray:
    """``a`` as int16 when its values fit (tree positions, feature indices), else as is."""
    return a.astype(np.int16) if len(a) == 0 or abs(a).max() < 2 ** 15 else a


CHUNKS = 16  # a row's trees in this many chunks, shared between threads


def _chunks(start: np.ndarray, n: int) -> np.ndarray:
    """The first tree of each of (at most) ``n`` runs of whole trees with about as many nodes
    each, and the number of trees at the end."""
    trees = len(start) - 1
    cuts = np.searchsorted(start[:-1], np.linspace(0, start[-1], n + 1)[1:-1])
    return np.unique(np.r_[0, cuts, trees]).astype(np.int64)


def node_count(booster) -> int:
    """Nodes in the booster's trees (what TreeSHAP's cost is proportional to)."""
    return sum(tree.count("\n") for tree in booster.get_dump())


def build(booster, iteration_range: tuple[int, int] = (0, 0), pool: Executor | None = None,
          threads: int = 1) -> PathShap | None:
    """The :class:`PathShap` of a gbtree booster's trees in ``iteration_range`` (as
    ``Booster.predict`` takes it), or None when the model is outside what it computes (or
    numba is missing). With ``pool``, ``threads - 1`` helpers on it share each row's trees
    with the calling thread."""
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

    nodes = sum(len(t["left_children"]) for t in trees)
    par = np.zeros(nodes, np.int32)
    prev = np.full(nodes, -1, np.int32)
    is_left = np.ones(nodes, np.uint8)
    feature = np.zeros(nodes, np.int32)
    threshold = np.zeros(nodes, np.float32)
    default_left = np.zeros(nodes, np.uint8)
    z_merged = np.ones(nodes)
    value = np.zeros(nodes)
    is_leaf = np.zeros(nodes, np.uint8)
    edge = np.zeros(nodes, np.int32)
    start = np.zeros(len(trees) + 1, np.int64)
    max_depth = 0
    s = 0
    for ti, t in enumerate(trees):
        left, right = t["left_children"], t["right_children"]
        order = [0]  # level order within the tree
        depth = {0: 0}
        for n in order:
            if left[n] != -1:
                order += [left[n], right[n]]
                depth[left[n]] = depth[right[n]] = depth[n] + 1
        max_depth = max(max_depth, max(depth.values()))
        local = {n: k for k, n in enumerate(order)}
        last_split: list[dict[int, int]] = [{}] * len(order)  # feature -> node below it
        for k, n in enumerate(order):
            i = s + k
            if left[n] == -1:
                is_leaf[i] = 1
                value[i] = t["split_conditions"][n]
            else:
                feature[i] = t["split_indices"][n]
                threshold[i] = t["split_conditions"][n]
                default_left[i] = bool(t["default_left"][n])
            if k == 0:
                continue
            p = t["parents"][n]
            pk = local[p]
            par[i] = pk
            is_left[i] = left[p] == n
            hp, hc = t["sum_hessian"][p], t["sum_hessian"][n]
            if not hp > 0 or not hc > 0:
                return None
            f = int(feature[s + pk])
            z_merged[i] = hc / hp
            seen = last_split[pk]
            if f in seen:  # top-down: a repeated feature's fractions multiply
                prev[i] = seen[f]
                z_merged[i] *= z_merged[s + seen[f]]
            last_split[k] = {**seen, f: k}
            edge[i] = info[ti] * n_features + f
        s += len(order)
        start[ti + 1] = s
    if s != nodes:  # nodes no path reaches: not a tree XGBoost wrote
        return None
    q = max(1, (max_depth + 1) // 2)  # degree < max_depth: exact with ceil(depth / 2) points
    if _kernel(q) is None:
        return None
    x, w = np.polynomial.legendre.leggauss(q)
    # the narrowest types that hold them: a row reads every node's fields (~23 bytes each,
    # 3.5 MB for 152,266 nodes), and between requests they leave the cache
    return PathShap(start=start, par=_narrow(par), prev=_narrow(prev), is_left=is_left,
                    feature=_narrow(feature), threshold=threshold, default_left=default_left,
                    z_merged=z_merged.astype(np.float32), value=value.astype(np.float32),
                    is_leaf=is_leaf, edge_weight_index=_narrow(edge),
                    points=(x + 1) / 2, weights=w / 2,
                    max_nodes=int(np.diff(start).max()), outputs=outputs,
                    n_features=n_features, chunks=_chunks(start, CHUNKS), pool=pool,
                    helpers=max(0, threads - 1) if pool is not None else 0)


def probe_rows(shap: PathShap, n_features: int, rows: int = 6, seed: int = 0) -> np.ndarray:
    """Rows that take both sides of many splits (each feature at one of its split values,
    half of them nudged below it) and the missing-value side (a row of NaN): what
    :func:`build`'s caller compares with XGBoost's TreeSHAP before trusting it."""
    rng = np.random.default_rng(seed)
    out = np.zeros((rows, n_features), dtype=np.float32)
    split = shap.is_leaf == 0
    by_feature = {int(f): shap.threshold[split & (shap.feature == f)]
                  for f in np.unique(shap.feature[split])}
    for r in range(rows - 1):
        for f, thr in by_feature.items():
            t = thr[rng.integers(len(thr))]
            out[r, f] = np.nextafter(t, np.float32(-np.inf)) if rng.random() < 0.5 else t
    out[-1] = np.nan
    return out
