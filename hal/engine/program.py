"""Programs: steps over numbered value slots, lifetimes planned, run many times (see ``hal.engine``)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from operator import itemgetter
from typing import Any

import numpy as np

from hal import limits
from hal.engine.guards import SHAPE_SIZED_OPS, output_nbytes, shape_settled_steps
from hal.engine.inplace import in_place, in_place_form
from hal.engine.subgraph import Scope, Subgraph, subgraph_attrs
from hal.engine.views import viewing
from hal.errors import HalError, RunError, UnsupportedOpError
from hal.graph.ir import Graph, Node, ShapeOnly
from hal.graph.passes import NONDETERMINISTIC
from hal.kernels import KernelContext, lookup

_ALWAYS = -1  # a guard that re-checks every run (the output size depends on input values)
#: at most this many bytes of weight-only step results are kept from run to run (and never more
#: than max_memory): enough for generated FC weights, not a second copy of a large model's weights
HOIST_LIMIT_BYTES = 1 << 30


@dataclass
class Step:
    """One call in a program: ``fn(*values[ins], **attrs)`` written to ``outs``."""

    fn: Callable[..., Any]
    ins: list[str]
    outs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    op_type: str = ""
    context_opset: int | None = None  # set when fn wants a KernelContext (control flow)
    #: the nodes a fused step runs (empty: the one node ``label`` names)
    nodes: tuple[str, ...] = ()
    #: the op whose size rule guards the step's memory, when not ``op_type`` ("" for none)
    guard_op: str | None = None
    #: a target's own step (not an ONNX op) whose results' shapes follow from its inputs' shapes
    #: alone, as an ONNX op's would (see hal.engine.guards)
    shapes_follow_inputs: bool = False
    #: layout nodes folded into this step (``hal.engine.views``): per input position, the views
    #: applied in order to the value read there before the guard and the kernel see it
    views: tuple[tuple[int, tuple[Any, ...]], ...] = ()
    #: values a fused step makes and frees before it returns (an attention core's scores and
    #: probabilities): a memory plan counts them live while the step runs
    scratch: tuple[str, ...] = ()

    @property
    def guarded_as(self) -> str:
        return self.op_type if self.guard_op is None else self.guard_op


def _implicit_reads(step: Step) -> set[str]:
    """Names a step's subgraph attributes read from the enclosing scope (they keep those values alive)."""
    out: set[str] = set()
    for v in step.attrs.values():
        for sg in v if isinstance(v, list) else [v]:
            if isinstance(sg, Subgraph):
                out |= sg.reads
    return out


def kernel_step(node: Node, graph: Graph) -> Step:
    """The reference kernel of one node as a step (UnsupportedOpError when no kernel exists)."""
    opset = graph.opset(node.domain)
    kdef = lookup(node.op_type, node.domain, opset)
    if kdef is None:
        dom = f"{node.domain}." if node.domain else ""
        raise UnsupportedOpError(f"no kernel for {dom}{node.op_type} at opset {opset}", where=f"node {node.name!r}",
                                 nodes=[(node.name, node.op_type, "no kernel")],
                                 hint="register one through the hal_kernels hook, or pick a target that has it")
    attrs = kdef.static_attrs(subgraph_attrs(node, graph.opsets), node.outputs)
    return Step(kdef.fn, list(node.inputs), list(node.outputs), attrs, node.name, node.op_type,
                opset if kdef.context else None)


def steps_for_nodes(graph: Graph, nodes: Iterable[Node]) -> list[Step]:
    """One reference kernel per node."""
    return [kernel_step(n, graph) for n in nodes]


def _root(a: np.ndarray) -> np.ndarray:
    """The array that owns ``a``'s memory (``a`` itself unless it is a view)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _shape_of(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"{v.dtype}{list(v.shape)}"
    if isinstance(v, list):
        return f"seq[{len(v)}]"
    return type(v).__name__


def _gather(ins: tuple[int, ...]) -> Callable[[list[Any]], tuple[Any, ...]]:
    """A step's argument gathering from the run's slots, as one C call: ``operator.itemgetter``
    (a list comprehension costs 0.2-0.4 us a step more on Python 3.11: tiny-gpt's 32 steps with
    kernels that return at once, 39 -> 31.5 us a run)."""
    if len(ins) >= 2:
        return itemgetter(*ins)
    if ins:
        i = ins[0]
        return lambda env: (env[i],)
    return _no_args


def _no_args(env: list[Any]) -> tuple[Any, ...]:
    return ()


@cache
def _unshared_refcount() -> int:
    """What ``sys.getrefcount`` reports, inside a kernel the step loop calls, for an argument that
    only the run's slot holds (measured through the loop itself, so it follows the interpreter)."""
    seen: list[int] = []

    def probe(a: Any) -> Any:
        seen.append(sys.getrefcount(a))
        return a

    def fresh() -> Any:
        return np.zeros(1)

    def pair() -> Any:
        return np.zeros(1), np.zeros(1)

    prog = Program.__new__(Program)
    prog._memo = []
    prog.slots = {}
    env: list[Any] = [None] * 5
    # read right after it is made, and after other steps (one with two outputs) ran in between
    plan = [(fresh, (), 0, {}, (), None, None, _gather(()), Step(fresh, [], ["a"])),
            (probe, (0,), 1, {}, (0,), None, None, _gather((0,)), Step(probe, ["a"], ["b"])),
            (fresh, (), 0, {}, (), None, None, _gather(()), Step(fresh, [], ["a"])),
            (pair, (), (2, 3), {}, (), None, None, _gather(()), Step(pair, [], ["c", "d"])),
            (probe, (0,), 4, {}, (0,), None, None, _gather((0,)), Step(probe, ["a"], ["e"]))]
    prog._execute(plan, env, None, limits.Bounds(1 << 30))
    return seen[0] if seen[0] == seen[1] else -1  # -1: the count is not stable here, never compute in place


class Program:
    """Flat steps over slots, with weights bound and lifetimes planned."""

    def __init__(self, graph: Graph, steps: Sequence[Step], *, extra_inputs: Sequence[str] = (),
                 output_names: Sequence[str] | None = None):
        self.graph = graph
        self.steps = list(steps)
        self.input_names = [i.name for i in graph.inputs]
        self.extra_inputs = list(extra_inputs)
        self.output_names = list(output_names) if output_names is not None else [o.name for o in graph.outputs]
        slots: dict[str, int] = {}

        def slot(name: str) -> int:
            if name not in slots:
                slots[name] = len(slots)
            return slots[name]

        for n in self.input_names + self.extra_inputs:
            slot(n)
        weights = {k: w for k, w in graph.initializers.items()}
        for k in weights:
            slot(k)
        for s in self.steps:
            for n in s.ins:
                if n:
                    slot(n)
            for n in s.outs:
                if n:
                    slot(n)
        for n in self.output_names:
            slot(n)
        self.slots = slots
        # Two slots past the named ones: an absent input reads ``_absent`` (always None) and an
        # output nobody names is written to ``_discard`` (freed by the same step), so the step
        # loop indexes without branching.
        self._absent, self._discard = len(slots), len(slots) + 1
        self._template: list[Any] = [None] * (len(slots) + 2)
        for k, w in weights.items():
            self._template[slots[k]] = w
        self._protect_weights()
        self.shape_only = any(isinstance(w, ShapeOnly) for w in weights.values())
        known = set(self.input_names) | set(self.extra_inputs)
        # Liveness: free each intermediate right after its last reader.
        keep = {slots[n] for n in self.output_names} | {slots[k] for k in weights}
        last_use: dict[int, int] = {}
        for idx, s in enumerate(self.steps):
            for n in s.ins:
                if n:
                    last_use[slots[n]] = idx
            for n in _implicit_reads(s):
                if n in slots:
                    last_use[slots[n]] = idx
            for n in s.outs:
                if n and slots[n] not in last_use:
                    last_use[slots[n]] = idx  # produced but never read: free at once
        frees: list[list[int]] = [[] for _ in self.steps]
        for sl, idx in last_use.items():
            if sl not in keep:
                frees[idx].append(sl)
        for idx, s in enumerate(self.steps):
            if any(not n for n in s.outs):
                frees[idx].append(self._discard)
        # Memory guard per step (see hal.limits): none, re-check every run, or an index into
        # ``_memo``, which remembers the last input signature's output size (ops in SHAPE_SIZED_OPS).
        guards: list[int | None] = []
        n_memo = 0
        for s in self.steps:
            if s.guarded_as not in limits.GUARDED_OPS:
                guards.append(None)
            elif s.guarded_as in SHAPE_SIZED_OPS:
                guards.append(n_memo)
                n_memo += 1
            else:
                guards.append(_ALWAYS)
        self._memo: list[tuple[tuple[Any, ...], int] | None] = [None] * n_memo
        absent, discard = self._absent, self._discard
        # Elementwise steps may reuse an operand's buffer where this step is its last reader and the
        # run holds it alone: an intermediate, or a feed given away (``run_list(consume=True)``; a
        # lent feed is still held by the caller's mapping, which ``in_place``'s reference count
        # sees). Never a weight, an output or a value lent by an enclosing scope.
        shared = keep | {slots[n] for n in self.extra_inputs}
        self._inplace: dict[int, tuple[int, ...]] = {}
        for idx, s in enumerate(self.steps):
            form = in_place_form(s.fn)
            if form is not None and len(s.outs) == 1 and not s.attrs and not s.views:
                ins = [slots[n] if n else absent for n in s.ins]
                uses = Counter(ins)  # (a Sum of thousands of inputs: count once, not once an input)
                freed = set(frees[idx])
                pos = tuple(k for k, sl in enumerate(ins) if sl in freed and sl not in shared and uses[sl] == 1)
                if pos and len(ins) == max(form[1], 1):
                    self._inplace[idx] = pos
        # One tuple per step: (fn, in slots, out slot or out slots, attrs, frees, guard, context opset,
        # the in slots' gathering, step). A single output is a bare int (the common case: one store, no zip).
        self._plan = [self._entry(i, s, tuple(slots[n] if n else absent for n in s.ins),
                                  (slots[s.outs[0]] if s.outs[0] else discard) if len(s.outs) == 1
                                  else tuple(slots[n] if n else discard for n in s.outs), frees[i], guards[i])
                      for i, s in enumerate(self.steps)]
        self._out_slots = [slots[n] for n in self.output_names]
        # Guards the feeds' shapes settle (hal.engine.guards): once a run passed them, a run whose feed
        # tensors have the same shapes and dtypes, under a max_memory at least as large, skips them
        feeds = [t.name for t in graph.inputs if t.kind == "tensor"]
        constants = [k for k in weights if k not in known]
        self._settled = frozenset(i for i in shape_settled_steps(graph, self.steps, feeds, constants)
                                  if guards[i] is not None)
        self._feed_slots = tuple(slots[n] for n in feeds)
        self._plan_settled = self._unguarded(self._plan)
        #: (feed signature, max_memory) of the last run that passed every settled guard
        self._settled_by: tuple[tuple[Any, ...], int] | None = None
        # Steps that read only weights compute the same value every run: the first run keeps their
        # results as weights (ONNX Runtime folds them at load; hal's compile-time folding stops at
        # FOLD_LIMIT_BYTES, e.g. the light zoo's ConstantOfShape-made FC weights). A kept result that
        # is an output is handed out as a copy (or shared, see ``run_list``).
        self._weight_names = frozenset(weights)
        self._hoistable = [
            i for i, s in enumerate(self.steps)
            if s.context_opset is None and s.op_type not in NONDETERMINISTIC and not _implicit_reads(s)
        ]
        self._prepared: tuple[list[Any], list[tuple[Any, ...]], list[tuple[Any, ...]] | None] | None = None

    def _entry(self, i: int, s: Step, ins: tuple[int, ...], outs: int | tuple[int, ...], frees: Iterable[int],
               guard: int | None) -> tuple[Any, ...]:
        frees = tuple(frees)
        gather = _gather(ins) if not s.views else viewing(_gather(ins), s, ins, frees)
        return (self._kernel(i, s), ins, outs, s.attrs, frees, guard, s.context_opset, gather, s)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)  # the plan's functions are pickled once, through the steps
        state["_plan"] = [(None, *e[1:7], None, e[8]) for e in self._plan]  # (the gathering is rebuilt too)
        state["_memo"] = [None] * len(self._memo)  # run-time caches: a stored program starts fresh
        state["_prepared"] = None
        state["_plan_settled"] = None
        state["_settled_by"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._plan = [self._entry(i, step, ins, outs, frees, guard)
                      for i, (_, ins, outs, _, frees, guard, _, _, step) in enumerate(state["_plan"])]
        self._plan_settled = self._unguarded(self._plan)
        self._protect_weights()

    def _unguarded(self, plan: list[tuple[Any, ...]], kept: Sequence[int] | None = None
                   ) -> list[tuple[Any, ...]] | None:
        """``plan`` (the steps ``kept``, all by default) without the guards the feeds' shapes settle;
        None when it has none."""
        idx = range(len(plan)) if kept is None else kept
        if not self._settled.intersection(idx):
            return None
        return [(*e[:5], None, *e[6:]) if i in self._settled else e for i, e in zip(idx, plan)]

    def _feed_signature(self, env: list[Any]) -> tuple[Any, ...] | None:
        """The shapes and dtypes of the run's feed tensors (None when one is not an array)."""
        sig = []
        for i in self._feed_slots:
            v = env[i]
            if v.__class__ is not np.ndarray:
                return None
            sig.append((v.shape, v.dtype))
        return tuple(sig)

    def _kernel(self, idx: int, step: Step) -> Callable[..., Any]:
        """What the loop calls for step ``idx``: its kernel, or the kernel computing in place."""
        pos = self._inplace.get(idx)
        known = in_place_form(step.fn) if pos is not None else None
        if pos is None or known is None:  # (a stored program whose kernel no longer qualifies: as is)
            return step.fn
        return in_place(step.fn, known[0], known[1], pos, _unshared_refcount())

    def _protect_weights(self) -> None:
        """Weights are the program's state across runs: no kernel may write them (read-only), and an
        output that aliases one is handed out as a copy, so a caller mutating it cannot change a later run."""
        roots = set()
        for w in self._template:
            if isinstance(w, np.ndarray):
                w.flags.writeable = False
                root = _root(w)
                root.flags.writeable = False  # (a weight that views a loader's buffer: nor through that)
                roots.add(id(root))
        self._weight_roots = roots

    def _outs(self, entry: tuple[Any, ...]) -> tuple[int, ...]:
        o = entry[2]
        return (o,) if isinstance(o, int) else o

    def _prepare(self, bounds: limits.Bounds, outer: Mapping[str, Any] | None
                 ) -> tuple[list[Any], list[tuple[Any, ...]], list[tuple[Any, ...]] | None]:
        """Run the weight-only steps once; their results join the weights (HOIST_LIMIT_BYTES in all):
        the template, the steps left and those without their settled guards (``_unguarded``)."""
        env = list(self._template)
        const = {i for i, v in enumerate(env) if v is not None}
        const.add(self._absent)
        budget = min(bounds.max_memory, HOIST_LIMIT_BYTES)
        hoisted: set[int] = set()
        for idx in self._hoistable:
            entry = self._plan[idx]
            if not all(i in const for i in entry[1]):
                continue
            # Without its frees (its views' included), and with the kernel itself (never in place): a
            # value this step reads last may still be read by an earlier, kept step.
            step, ins = entry[-1], entry[1]
            gather = entry[7] if not step.views else viewing(_gather(ins), step, ins, ())
            self._execute([(step.fn, *entry[1:4], (), entry[5], entry[6], gather, step)], env, outer, bounds)
            made = [o for o in self._outs(entry) if o != self._discard]
            size = sum(getattr(env[o], "nbytes", 0) for o in made)
            if size > budget or not all(isinstance(env[o], np.ndarray) for o in made):
                for o in made:
                    env[o] = None
                continue
            budget -= size
            hoisted.add(idx)
            const.update(made)
        kept_idx = [i for i in range(len(self._plan)) if i not in hoisted]
        kept = [self._plan[i] for i in kept_idx]
        read = {i for e in kept for i in e[1]} | {self.slots[n] for e in kept for n in _implicit_reads(e[-1])
                                                  if n in self.slots} | set(self._out_slots)
        template = list(self._template)
        for idx in hoisted:
            for o in self._outs(self._plan[idx]):
                if o in read and o != self._discard:
                    template[o] = env[o]
                    # a kept result is a weight from now on: read-only, and copied when an output aliases it
                    env[o].flags.writeable = False
                    self._weight_roots = self._weight_roots | {id(_root(env[o]))}
        prepared = (template, kept, self._unguarded(kept, kept_idx))
        self._prepared = prepared
        return prepared

    def run_list(self, feeds: Mapping[str, Any], outer: Mapping[str, Any] | None = None, *,
                 consume: bool = False) -> list[Any]:
        """Run with feeds by name (already validated); returns outputs in ``output_names`` order.
        NaN and infinities propagate as IEEE 754 says, without warnings (or errors under -W): the
        run is under ``np.errstate(all="ignore")``; a caller under it already calls
        ``run_list_ignoring_errors`` instead (1.5-2.5 us a call).

        Before each step: the run's deadline (``timeout_s``) and, for ops whose output size depends
        on values or dynamic shapes, ``max_memory`` (see hal.limits) — both as ResourceError.
        An output that is (a view of) a weight, or of a kept weight-only result, is copied.
        With ``consume``, ``feeds`` is a dict the caller gives away: it is emptied once bound, so
        each input is freed after its last reader instead of living through the whole run.
        """
        with np.errstate(all="ignore"):
            return self.run_list_ignoring_errors(feeds, outer, consume=consume)

    def run_list_ignoring_errors(self, feeds: Mapping[str, Any], outer: Mapping[str, Any] | None = None, *,
                                 consume: bool = False) -> list[Any]:
        """``run_list`` for a caller under ``np.errstate(all="ignore")`` already."""
        if self.shape_only:
            raise RunError("this model's weights are declared by shape only, so it can be compiled and "
                           "estimated but not run", where=self.graph.name,
                           hint="use hal estimate, or build the model with real weights")
        bounds = limits.current()
        if bounds.deadline is not None:
            limits.check_deadline(self.graph.name)
        template, plan, unguarded = self._template, self._plan, self._plan_settled
        slots = self.slots
        # A feed that overrides a weight would make the kept weight-only results stale.
        if self._hoistable and (not self._weight_names or self._weight_names.isdisjoint(feeds)):
            prepared = self._prepared
            if prepared is None:
                prepared = self._prepare(bounds, outer)
            template, plan, unguarded = prepared
        env = list(template)
        for name, v in feeds.items():
            i = slots.get(name)
            if i is not None:
                env[i] = v
        if consume and isinstance(feeds, dict):
            feeds.clear()
        v = None  # (the loop's last feed: only the slot holds it now)
        if outer:
            for name, v in outer.items():
                i = slots.get(name)
                if i is not None and env[i] is None:
                    env[i] = v
        sig = self._feed_signature(env) if unguarded is not None else None
        if sig is not None:
            passed = self._settled_by
            if passed is not None and passed[0] == sig and bounds.max_memory >= passed[1]:
                plan, sig = unguarded, None
        self._execute(plan, env, outer, bounds)
        if sig is not None:  # this run passed every guard: the same feed shapes need not check again
            self._settled_by = (sig, bounds.max_memory)
        out = [env[i] for i in self._out_slots]
        if self._weight_roots:
            roots = self._weight_roots
            for k, v in enumerate(out):  # (an array without a base is its own root: no walk up)
                if isinstance(v, np.ndarray) and id(v if v.base is None else _root(v)) in roots:
                    out[k] = v.copy()
        return out

    def _execute(self, plan: Sequence[tuple[Any, ...]], env: list[Any], outer: Mapping[str, Any] | None,
                 bounds: limits.Bounds) -> None:
        """The step loop: guards, the kernel call, outputs into slots, frees after last use."""
        timed = bounds.deadline is not None
        max_memory = bounds.max_memory
        memo = self._memo
        ndarray = np.ndarray
        for fn, _, outs, attrs, frees, guard, ctx, gather, step in plan:
            args = gather(env)  # (with the step's views applied: ``hal.engine.views.viewing``)
            if timed:
                limits.check_deadline(f"node {step.label!r}")
            if guard is not None:
                if guard == _ALWAYS:
                    limits.check_step(step.guarded_as, step.label, args, attrs, max_memory)
                else:
                    sig = tuple([(a.shape, a.dtype) if isinstance(a, ndarray) else type(a) for a in args])
                    seen = memo[guard]
                    if seen is None or seen[0] != sig:
                        seen = (sig, output_nbytes(step.guarded_as, args, attrs))
                        memo[guard] = seen  # one tuple: atomic for concurrent runs
                    if seen[1] > max_memory:
                        limits.check_step(step.guarded_as, step.label, args, attrs, max_memory)
            try:
                if ctx is None:
                    res = fn(*args, **attrs) if attrs else fn(*args)
                else:
                    res = fn(*args, _ctx=KernelContext(ctx, Scope(self.slots, env, outer), step.label), **attrs)
            except HalError as e:
                if ctx is not None:  # from a body this node runs (If, Loop, Scan, a generation op's decoder)
                    e.within(f"node {step.label!r}")
                raise
            except Exception as e:  # a kernel failure becomes a RunError naming the node
                shapes = ", ".join(_shape_of(a) for a in args)
                raise RunError(f"{step.op_type} failed: {type(e).__name__}: {e}", where=f"node {step.label!r}",
                               hint=f"inputs were ({shapes})") from e
            if outs.__class__ is int:
                env[outs] = res[0] if res.__class__ is tuple else res
            else:
                if res.__class__ is not tuple:
                    res = (res,)
                for o, r in zip(outs, res):
                    env[o] = r
                r = None
            res = None  # the slots hold the results alone (what _unshared_refcount measured)
            for f in frees:
                env[f] = None

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        return dict(zip(self.output_names, self.run_list(feeds)))
