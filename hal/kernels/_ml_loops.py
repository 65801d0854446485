"""Compiled loops of the ai.onnx.ml kernels: a classifier's first maximum and a SOFTMAX over a few
classes, row by row, and a tree ensemble's walk and leaf sums. Read them as C, as
``hal.kernels._loops``, which imports them so that ``jit.loops()`` reaches them."""

from __future__ import annotations

import numpy as np
from numba import types

from hal.kernels.jit import njit

U = np.uintp  # (indices cast to it vectorise: see ``hal.kernels._loops``)

_F64_ROWS_RO = types.Array(types.float64, 2, "C", readonly=True)
_F64_ROWS = types.Array(types.float64, 2, "C")


@njit(signature=types.void(_F64_ROWS_RO, types.Array(types.intp, 1, "C")))
def first_max_rows(scores, out):
    """The column of each row's first maximum into ``out``, as C++'s ``>`` finds it: a NaN never
    wins, and a leading NaN keeps column 0 (an ai.onnx.ml classifier's label)."""
    for r in range(scores.shape[0]):
        best = 0
        top = scores[U(r), 0]
        for j in range(1, scores.shape[1]):
            v = scores[U(r), U(j)]
            if v > top:
                best = j
                top = v
        out[U(r)] = best


@njit(signature=types.void(_F64_ROWS_RO, _F64_ROWS))
def shift_by_row_max(x, out):
    """x less its row's maximum into ``out``, the maximum taken front to back as ``np.maximum`` takes
    it (a NaN anywhere makes it NaN): the first pass of an ai.onnx.ml SOFTMAX over a few classes."""
    for r in range(x.shape[0]):
        m = x[U(r), 0]
        for j in range(1, x.shape[1]):
            v = x[U(r), U(j)]
            m = v if (v > m or v != v) else m
        for j in range(x.shape[1]):
            out[U(r), U(j)] = x[U(r), U(j)] - m


@njit(signature=types.void(_F64_ROWS))
def divide_by_row_sum(e):
    """Each row divided, in place, by its sum added front to back (as a column at a time adds it)."""
    for r in range(e.shape[0]):
        t = e[U(r), 0]
        for j in range(1, e.shape[1]):
            t = t + e[U(r), U(j)]
        for j in range(e.shape[1]):
            e[U(r), U(j)] = e[U(r), U(j)] / t


@njit
def forest_leaves(data, roots, feature, split, rule, children, leaf_row, go, depth, out):
    """The leaf each (sample, tree) pair of a tree ensemble reaches (``hal.kernels.ml_trees``): out[i, t]
    is the table row of sample i's leaf in tree t. A pair walks down alone and stops at its leaf, where the
    numpy walk steps every pair once a level, a dozen calls over all pairs each (20 trees of depth 6 and
    1,000 rows: 2.0 ms). ``go[rule * 5 + outcome]`` says whether a branch goes true, by how the value
    compares with the split (0 above, 1 equal, 3 below, 4 NaN); ``children`` holds (false, true) pairs."""
    for i in range(data.shape[0]):
        for t in range(roots.shape[0]):
            node = U(roots[t])
            for _ in range(depth):
                if leaf_row[node] >= 0:
                    break
                v = data[i, U(feature[node])]
                s = split[node]
                outcome = 4 if v != v else (1 if v <= s else 0) + (2 if v < s else 0)
                node = U(children[U(2 * node + go[U(rule[node] * 5 + outcome)])])
            out[i, t] = leaf_row[node]


@njit
def forest_sums(leaf, table, has, scores, hit):
    """Each sample's leaf weights summed tree by tree, in order (so float32 sums round as onnxruntime's),
    into scores (samples, targets), and which targets some reached leaf fed into hit."""
    for i in range(leaf.shape[0]):
        for t in range(leaf.shape[1]):
            row = U(leaf[i, t])
            for k in range(table.shape[1]):
                scores[i, k] += table[row, k]
                hit[i, k] |= has[row, k]


__all__ = ["divide_by_row_sum", "first_max_rows", "forest_leaves", "forest_sums", "shift_by_row_max"]
