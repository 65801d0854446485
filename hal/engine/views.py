"""Layout nodes folded into the step that reads them.

A Reshape, Transpose, Squeeze, Unsqueeze or Flatten whose parameters are constants is a numpy view
(or, for a Reshape of a non-contiguous input, a copy) of its input. As a step of its own it costs a
kernel call and a pass of the step loop — 1.5-3 us, about as much as the 16x64 GEMM it feeds on
tiny-gpt, where eight of them sit around each attention. ``fold_views`` takes such a step out of the
program when exactly one step reads its result, and has that step apply the view to the input as
the engine gathers its arguments (``Step.views``): the same numpy call on the same array, so the
same result, before the reader's memory guard and kernel see it.

A view is not folded when its input is a weight or computed from weights alone (the program keeps
such a view's result after the first run instead of redoing it), into a step that computes in place
(it would lose its buffer reuse) or into a control-flow step. A view that fails raises the RunError
its own node would have raised.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from hal.engine.guards import SHAPE_FROM_SHAPES
from hal.engine.inplace import in_place_form
from hal.errors import RunError
from hal.graph.fuse import GraphIndex
from hal.graph.ir import Graph
from hal.graph.passes import NONDETERMINISTIC
from hal.kernels import lookup

if TYPE_CHECKING:
    from hal.engine.program import Step


class View:
    """One folded layout node: ``view(x)`` is its result; ``label`` and ``op`` name it in errors."""

    __slots__ = ("label", "op")

    def __init__(self, label: str, op: str):
        self.label, self.op = label, op

    def __call__(self, x: Any) -> Any:  # pragma: no cover - every view overrides it
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for cls in type(self).__mro__ for k in getattr(cls, "__slots__", ())}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)


class TransposeView(View):
    """Transpose: ``np.transpose(x, perm)``, as the ndarray method (a third of the function's cost)."""

    __slots__ = ("perm",)

    def __init__(self, label: str, perm: tuple[int, ...] | None):
        super().__init__(label, "Transpose")
        self.perm = perm

    def __call__(self, x: Any) -> Any:
        if x.__class__ is not np.ndarray:
            return np.transpose(x, self.perm)
        return x.transpose() if self.perm is None else x.transpose(self.perm)


class ReshapeView(View):
    """Reshape to a constant shape: ``0`` copies the input's dimension unless ``allowzero``."""

    __slots__ = ("copies", "shape")

    def __init__(self, label: str, shape: list[int], allowzero: int):
        super().__init__(label, "Reshape")
        self.copies = not allowzero and 0 in shape
        self.shape = list(shape) if self.copies else tuple(shape)

    def __call__(self, x: Any) -> Any:
        if self.copies:
            return x.reshape([x.shape[i] if s == 0 else s for i, s in enumerate(self.shape)])
        return x.reshape(self.shape)


class KernelView(View):
    """Any other layout node: its registered kernel with its constant inputs (by registry key, so a
    stored program pickles the key, not the function)."""

    __slots__ = ("attrs", "consts", "fn", "key")

    def __init__(self, label: str, key: tuple[str, str, int], consts: tuple[Any, ...], attrs: dict[str, Any]):
        super().__init__(label, key[1])
        self.key, self.consts, self.attrs = key, consts, dict(attrs)
        self.fn = _kernel(key)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("fn", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.fn = _kernel(self.key)

    def __call__(self, x: Any) -> Any:
        return self.fn(x, *self.consts, **self.attrs)


def _kernel(key: tuple[str, str, int]) -> Any:
    kdef = lookup(key[1], key[0], key[2])
    if kdef is None or kdef.since != key[2]:
        raise RunError(f"no kernel {key[1]} (since opset {key[2]}) to rebuild a folded view", where="program load",
                       hint="recompile: the stored program came from another hal")
    return kdef.fn


def viewing(get: Callable[[list[Any]], Sequence[Any]], step: Step, ins: Sequence[int], frees: Sequence[int]
            ) -> Callable[[list[Any]], list[Any]]:
    """The engine's argument gathering for a step with views: ``get`` reads its arguments from the
    run's slots, then each argument ``step.views`` names is replaced by its views' result, in order
    (one function per chain, ``_chained``), before the reader's guard and kernel see it. A value
    read last here through a view that copied it (a Reshape of a transposed tensor) is let go from
    its slot at once, as its own step's frees would have, not after the reader's kernel."""
    chains = tuple((pos, _chained(chain), ins[pos] if ins[pos] in frees else -1) for pos, chain in step.views)

    def gather(env: list[Any]) -> list[Any]:
        args = list(get(env))
        for pos, apply, free in chains:
            args[pos] = apply(args[pos])
            if free >= 0:
                env[free] = None
        return args

    return gather


def _chained(chain: Sequence[View]) -> Callable[[Any], Any]:
    """``chain`` as one function. A chain of Transposes and Reshapes that copy no dimension is the
    ndarray methods called in turn (tiny-gpt's two head splits before Q @ K^T: 1.44 -> 0.85 us, a view
    object's call and the loop around it were more than numpy's calls); anything else, or an
    argument that is not an ndarray, runs view by view. A failing view raises the RunError its own
    node would have raised."""

    def each(x: Any) -> Any:
        for v in chain:
            try:
                x = v(x)
            except Exception as e:  # v failed on x: the engine's own message for a failing step
                from hal.engine.program import _shape_of

                raise RunError(f"{v.op} failed: {type(e).__name__}: {e}", where=f"node {v.label!r}",
                               hint=f"inputs were ({_shape_of(x)})") from e
        return x

    methods = []
    for v in chain:
        if v.__class__ is TransposeView:
            methods.append((np.ndarray.transpose, v.perm))
        elif v.__class__ is ReshapeView and not v.copies:
            methods.append((np.ndarray.reshape, v.shape))
        else:
            return each
    ndarray = np.ndarray
    if len(methods) == 1:
        (f, a), = methods

        def one(x: Any) -> Any:
            if x.__class__ is ndarray:
                try:
                    return f(x, a)
                except Exception:
                    pass
            return each(x)  # (raises the view's RunError where the method failed)

        return one
    if len(methods) == 2:
        (f, a), (g, b) = methods

        def two(x: Any) -> Any:
            if x.__class__ is ndarray:
                try:
                    return g(f(x, a), b)
                except Exception:
                    pass
            return each(x)

        return two

    def many(x: Any) -> Any:
        if x.__class__ is ndarray:
            try:
                y = x
                for f, a in methods:
                    y = f(y, a)
                return y
            except Exception:
                pass
        return each(x)

    return many


#: the layout ops ``fold_views`` folds (each returns a view of its input where numpy can express one)
VIEW_OPS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"})


def _view(step: Step, graph: Graph, constants: set[str]) -> View | None:
    """The step as a View, when it is a plain layout kernel whose other inputs are constants."""
    if step.op_type not in VIEW_OPS or step.context_opset is not None or step.nodes or len(step.outs) != 1:
        return None
    if not step.ins or not step.ins[0] or not step.outs[0] or step.ins[0] in graph.initializers:
        return None
    opset = graph.opset("")
    kdef = lookup(step.op_type, "", opset)
    if kdef is None or kdef.fn is not step.fn:  # a target's wrapper (a numeric policy): left as it is
        return None
    consts = []
    for x in step.ins[1:]:
        w = graph.initializers.get(x) if x else None
        if x and (x not in constants or not isinstance(w, np.ndarray)):
            return None
        consts.append(w)
    attrs = step.attrs
    if step.op_type == "Transpose" and not consts:
        perm = attrs.get("perm")
        return TransposeView(step.label, None if perm is None else tuple(int(p) for p in perm))
    if step.op_type == "Reshape":
        shape = consts[0] if consts else attrs.get("shape")
        if shape is None or set(attrs) - {"allowzero", "shape", "consumed_inputs"}:
            return None
        return ReshapeView(step.label, [int(s) for s in np.asarray(shape).reshape(-1)], int(attrs.get("allowzero", 0)))
    return KernelView(step.label, (kdef.domain, kdef.op_type, kdef.since), tuple(consts), attrs)


def _takes_views(step: Step) -> bool:
    """Whether a step may apply views to its arguments: not control flow (its kernel reads the
    enclosing scope), and not a kernel the engine may run in place (it would lose that)."""
    return step.context_opset is None and in_place_form(step.fn) is None


def _follows_shapes(step: Step, graph: Graph) -> bool:
    """Whether the reader's results' shapes follow from its inputs' shapes alone, as
    ``hal.engine.guards`` reads a step: then so do they with constant views before it. A plain
    step counts when its kernel is the ONNX op's; a fused one (its members are ONNX nodes, see
    ``hal.graph.fuse``) when every member's op does."""
    if step.shapes_follow_inputs:
        return True
    ops = step.op_type.split("+")
    if step.context_opset is not None or len(ops) != len(step.nodes or (step.label,)):
        return False
    if not all(op in SHAPE_FROM_SHAPES for op in ops):
        return False
    if step.nodes:
        return True
    kdef = lookup(step.op_type, "", graph.opset(""))
    return kdef is not None and kdef.fn is step.fn


class _Folding:
    """The views folded so far into one reading step, kept as lists and made into the step once, so
    that a chain of n views costs O(n) (a new step per fold rebuilt its name each time: O(n²))."""

    def __init__(self, step: Step, graph: Graph):
        self.step = step
        self.ins = list(step.ins)
        self.uses = Counter(self.ins)
        self.at = {x: k for k, x in enumerate(self.ins)}  # the position of each input read once
        self.views: dict[int, list[View]] = {}             # per position, last view first
        self.labels: list[str] = []                         # the folded steps' labels, last first
        self.op_types: list[str] = []
        # as a plain reader's own results would (see _follows_shapes): views before it change nothing
        self.follows = _follows_shapes(step, graph)

    def fold(self, value: str, source: str, view: View, label: str, op_type: str) -> None:
        """``value`` (read once) becomes ``view`` of ``source``."""
        pos = self.at[value]
        self.ins[pos] = source
        self.uses[value] -= 1
        self.uses[source] += 1
        self.at[source] = pos
        self.views.setdefault(pos, []).append(view)
        self.labels.append(label)
        self.op_types.append(op_type)

    def folded(self) -> Step:
        """The reader with its views, named as a fused step is (its nodes' names and op types joined
        by "+"), and guarded as the reader."""
        t = self.step
        views = {pos: (*reversed(chain), *dict(t.views).get(pos, ())) for pos, chain in self.views.items()}
        nodes = (*reversed(self.labels), *(t.nodes or (t.label,)))
        return replace(t, ins=self.ins, views=tuple(sorted({**dict(t.views), **views}.items())), nodes=nodes,
                       label="+".join(nodes), op_type="+".join((*reversed(self.op_types), t.op_type)),
                       guard_op=t.guarded_as, shapes_follow_inputs=self.follows)


def fold_views(graph: Graph, steps: Sequence[Step], index: GraphIndex | None = None) -> list[Step]:
    """``steps`` (in run order) with each foldable layout step (see the module's text) applied by the
    one step that reads its result instead; chains of them compose. ``index``: the graph's
    ``GraphIndex`` when the caller has it (building one is O(graph))."""
    ix = index or GraphIndex(graph)
    constants = set(graph.initializers) - ix.graph_inputs
    steps = list(steps)
    # values computed from weights alone: the program keeps them after the first run (hoisting), so a
    # view of one stays a step and is kept too, rather than being redone in its reader every run
    weight_only = set(constants)
    for s in steps:
        if s.context_opset is None and s.op_type not in NONDETERMINISTIC and all(not x or x in weight_only
                                                                                   for x in s.ins):
            weight_only.update(o for o in s.outs if o)
    readers: dict[str, list[int]] = {}
    for i, s in enumerate(steps):
        for x in dict.fromkeys(s.ins):
            if x:
                readers.setdefault(x, []).append(i)
    folding: dict[int, _Folding] = {}
    dropped: set[int] = set()
    for i in range(len(steps) - 1, -1, -1):  # readers first: a chain of views composes into the last reader
        s = steps[i]
        view = _view(s, graph, constants)
        if view is None or s.ins[0] in weight_only:
            continue
        out = s.outs[0]
        r = readers.get(out, [])
        if ix.sole_consumer(out) is None or len(r) != 1:  # several readers, a graph output, a subgraph's read
            continue
        j = r[0]
        f = folding.get(j)
        if f is None:
            if not _takes_views(steps[j]):
                continue
            f = folding[j] = _Folding(steps[j], graph)
        if f.uses[out] != 1:
            continue
        f.fold(out, s.ins[0], view, s.label, s.op_type)
        readers[s.ins[0]] = [j if k == i else k for k in readers[s.ins[0]]]
        dropped.add(i)
    for j, f in folding.items():
        if f.labels:
            steps[j] = f.folded()
    return [s for i, s in enumerate(steps) if i not in dropped]


__all__ = ["VIEW_OPS", "KernelView", "ReshapeView", "TransposeView", "View", "fold_views", "viewing"]
