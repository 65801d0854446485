"""Host kernels that run several nodes as one step, bit-identical to running them one by one.

Each calls the very kernels the nodes would run (looked up by registry key, so a stored program
pickles keys, not closures) and only changes where results are written: a result goes into a
buffer this step made and no one else holds, instead of a new allocation (fewer page-faulted
activations, one step instead of several). A region of float32 arithmetic, Erf and Tanh whose
operands are all one size or scalars runs block by block over cache-sized slices (``Region.BLOCK``
elements), every member's block in reused buffers: the same operations on the same elements, so the
same bits, without a pass over memory per member (BERT's erf GELU: 3.16 -> 2.81 ms a layer). A
Softmax region whose members scale and mask the scores runs them inside the softmax's first compiled
pass (``_softmax_chain``): the same float32 operations in the same order, so again the same bits.
A product's GELU epilogue is ``hal.kernels.epilogue``; a Relu and the pool, BatchNormalization or
Add around it, ``hal.kernels.fused_relu``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from hal import limits
from hal.kernels import activation, blas, elementwise, jit, linalg
from hal.kernels.elementwise import broadcasts_onto
from hal.kernels.registry import lookup
from hal.kernels.score_chain import ScoreChain, member

Array = np.ndarray
_F32 = np.dtype(np.float32)
#: a registered kernel by registry key: (domain, op type, since)
Key = tuple[str, str, int]


def _resolve(key: Key) -> Any:
    kdef = lookup(key[1], key[0], key[2])
    if kdef is None or kdef.since != key[2]:
        from hal.errors import RunError

        raise RunError(f"no kernel {key[1]} (since opset {key[2]}) to rebuild a fused step",
                       where="program load", hint="recompile: the stored program came from another hal")
    return kdef.fn


def _grows(args: Sequence[Any]) -> bool:
    """Whether an elementwise result would be larger than its largest operand (a broadcast grows it):
    only then can it need memory beyond what the run already holds."""
    if any(a.__class__ is not np.ndarray for a in args):
        return True
    try:
        shape = np.broadcast_shapes(*[a.shape for a in args])
    except ValueError:
        return True  # the kernel raises the real error
    return math.prod(shape) > max(a.size for a in args)


class _Fused:
    """Kernels by key; pickles the keys and resolves them again on load. What ``_bind`` derives
    from them, and what calls keep, a subclass names in ``_derived``: never pickled, made again by
    ``_bind`` on load (a stored program starts with nothing kept)."""

    keys: list[Key]
    _derived: tuple[str, ...] = ()

    def _bind(self) -> None:
        self.fns = [_resolve(k) for k in self.keys]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for k in ("fns", *self._derived):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bind()


class MatMulBias(_Fused):
    """MatMul, then the bias Add into the product's buffer (the step's inputs: a, b, bias).

    ``product``: what computes the MatMul's result in place of its kernel, where a target's number
    format wraps the matrix op (its operands rounded, say) and leaves the Add as it is: the Add then
    reads what the wrapped step would have given it, so the bits are those of the two steps apart.
    It must return an array of its own (a kernel's result), as the MatMul kernel does."""

    product: Any = None
    _derived = ("_ufunc_add", "_mm", "_kept")

    def __init__(self, matmul: Key, add: Key, bias_first: bool, product: Any = None):
        self.keys = [matmul, add]
        self.bias_first = bias_first
        self.product = product
        self._bind()

    def _bind(self) -> None:
        super()._bind()
        self._ufunc_add = self.fns[1] is elementwise.add  # the Add is np.add: it may run into the product
        self._mm = self.fns[0] if self.product is None else self.product
        #: (a's shape, the weight, the bias, ``_gemm_loops.gemm_bias``'s machine code where it may take a
        #: C-contiguous a of that shape, else None, the result's shape) of the last float32 call
        #: ``_keep`` found repeatable
        self._kept: tuple[Any, ...] | None = None

    def __call__(self, a: Array, b: Array, bias: Array) -> Array:
        kept = self._kept
        if (kept is not None and b is kept[1] and bias is kept[2] and a.__class__ is np.ndarray and a.dtype is _F32
                and a.shape == kept[0]):
            # what the kernels did for this shape, weight and bias: the MatMul kernel's one product of
            # a as it is, then the bias added into it; numpy's sgemm and the Add in one compiled call
            # where a lies row-major (``hal.kernels.blas``)
            if kept[3] is not None and a.flags.c_contiguous:
                y = np.empty(kept[4], dtype=_F32)
                kept[3](a, b, bias, self.bias_first, y)
                return y
            y = np.matmul(a, b)
            return np.add(bias, y, out=y) if self.bias_first else np.add(y, bias, out=y)
        y = self._mm(a, b)
        if self._ufunc_add and self.product is None:
            self._keep(a, b, bias)
        return self.add_bias(y, bias)

    def _keep(self, a: Any, b: Any, bias: Any) -> None:
        """Keep this call's operands' shape, weight and bias where the next call with them may skip the
        kernels' checks: float32, a read-only 2-D weight and 1-D bias of its width (or one), and an
        activation that the MatMul kernel multiplies as it is (``linalg.matmul_as_is``)."""
        if (self.fns[0] is linalg.matmul and linalg.matmul_as_is(a, b) and b.ndim == 2 and a.shape[-1] == b.shape[0]
                and bias.__class__ is np.ndarray and bias.dtype is _F32 and bias.ndim == 1
                and bias.shape[0] in (1, b.shape[1]) and not b.flags.writeable and not bias.flags.writeable):
            gemm = blas.loops()
            shape = (*a.shape[:-1], b.shape[1])
            direct = None
            if gemm is not None and a.ndim <= 3 and bias.flags.c_contiguous and gemm.rows_ok(a, b):
                # the loop's machine code for these types (a's dtype, layout and shape checked a call)
                direct = jit.entry(gemm.gemm_bias, a, b, bias, self.bias_first, np.empty(shape, dtype=_F32))
            self._kept = (a.shape, b, bias, direct, shape)  # one tuple: atomic for concurrent runs

    def add_bias(self, y: Any, bias: Array) -> Any:
        """The Add of ``bias`` to the product ``y`` (the step's own array), into y where numpy's add
        would give the same array."""
        if (self._ufunc_add and y.__class__ is np.ndarray and y.dtype == bias.dtype and y.flags.writeable
                and bias.ndim == 1 and y.ndim and (bias.shape[0] == 1 or bias.shape[0] == y.shape[-1])):
            return np.add(bias, y, out=y) if self.bias_first else np.add(y, bias, out=y)
        add = self.fns[1]
        return add(bias, y) if self.bias_first else add(y, bias)


class MatMulGroup(_Fused):
    """``n`` MatMuls that read one activation, each through its own weight and each with its bias
    Add or each without (the step's inputs: a, the n weights, then the n biases if any), as
    attention's Q, K and V projections or an MLP's gate and up ones.

    Where the weights are the consecutive matrices of one array and the biases the rows of
    another (``hal.graph.passes.stack_sibling_weights`` lays them out so), one batched matmul over
    that array and one add of the biases: numpy makes the same BLAS call per matrix as the MatMul
    kernel does for each, and the adds are the same float32 sums, so the same bits as the nodes
    apart, for one call each instead of n (tiny-gpt's three 16x64 by 64x64 projections 15.2 -> 8.6 us
    in isolation, its whole run 1.034x faster; BERT-bench's 512-row ones are BLAS time, level).
    Elsewhere (weights laid out apart, as after a stored program is loaded; other dtypes; an
    activation that is not C-contiguous, which the separate products may read through a transposed
    BLAS call; a 1-D one) each runs alone: ``MatMulBias``, or the MatMul kernel."""

    _derived = ("_biased", "_pair", "_batched", "_layout")

    def __init__(self, matmul: Key, add: Key | None, n: int):
        self.keys = [matmul] if add is None else [matmul, add]
        self.n = n
        self._bind()

    def _bind(self) -> None:
        super()._bind()
        self._biased = len(self.keys) == 2
        self._pair = MatMulBias(self.keys[0], self.keys[1], False) if self._biased else None
        self._batched = self.fns[0] is linalg.matmul and (not self._biased or self.fns[1] is elementwise.add)
        #: (the weights and biases of the last call, the weights' stacked array or None, the biases'
        #: as (n, 1, N), or None where they are not stacked or there are none, ``_gemm_loops.gemm_group``'s
        #: machine code for an activation of 2 axes and of 3 where it may take the products and the adds,
        #: else None, the biases as (n, N) for it)
        self._layout: tuple[Any, ...] | None = None

    def __call__(self, a: Array, *weights: Array) -> tuple[Array, ...]:
        n = self.n
        layout = self._layout
        if layout is None or len(layout[0]) != len(weights) or not all(map(operator.is_, weights, layout[0])):
            w, b = _stacked(weights[:n]), _stacked(weights[n:]) if self._biased else None
            layout = (weights, w, None if b is None else b[:, None, :], *self._direct(w, b))
            self._layout = layout  # one tuple: atomic for concurrent runs
        _, w, b, group, rows_b = layout
        if (self._batched and w is not None and (b is not None or not self._biased) and a.__class__ is np.ndarray
                and a.ndim >= 2 and a.dtype == w.dtype == _F32 and a.shape[-1] == w.shape[1] and a.flags.c_contiguous
                and (b is None or b.dtype == _F32)):
            if group is not None and a.ndim <= 3 and a.size >= 2 * a.shape[-1]:
                # numpy's sgemm a weight and the adds in one compiled call (``hal.kernels.blas``), its
                # machine code for an activation of a's axes
                y = np.empty((n, *a.shape[:-1], w.shape[2]), dtype=_F32)
                group[a.ndim - 2](a, w, rows_b, self._biased, y)
                return tuple(y)
            y = np.matmul(a.reshape(-1, a.shape[-1]), w)  # (n, rows, N): one BLAS product per weight
            if b is not None:
                np.add(y, b, out=y)
            return tuple(y.reshape(n, *a.shape[:-1], w.shape[2]))  # (iterating gives each product)
        if self._pair is not None:
            return tuple([self._pair(a, weights[i], weights[n + i]) for i in range(n)])
        return tuple([self.fns[0](a, weights[i]) for i in range(n)])

    def _direct(self, w: Array | None, b: Array | None) -> tuple[Any, Any]:
        """(``_gemm_loops.gemm_group``'s machine code for an activation of 2 axes and of 3, the biases
        as (n, N)) where it may run the stacked products (float32 matrices of at least 2 by 2; the
        activation's rows, at least 2, and its layout are checked a call), else (None, None)."""
        gemm = blas.loops() if self._batched and w is not None else None
        if (gemm is None or w.dtype != _F32 or min(w.shape[1:]) < 2  # type: ignore[union-attr]
                or (self._biased and (b is None or b.dtype != _F32 or b.ndim != 2))):
            return None, None
        rows_b = b if b is not None else np.zeros((0, 0), dtype=_F32)
        n, k, m = w.shape  # type: ignore[union-attr]
        loops = tuple(jit.entry(gemm.gemm_group, np.empty((*lead, k), dtype=_F32), w, rows_b, self._biased,
                                np.empty((n, *lead, m), dtype=_F32)) for lead in ((2,), (1, 2)))
        return loops, rows_b


def _stacked(xs: Sequence[Any]) -> Array | None:
    """The C-contiguous array whose consecutive entries along its first axis ``xs`` are, else None."""
    base = getattr(xs[0], "base", None)
    if (base is None or base.__class__ is not np.ndarray or base.ndim != xs[0].ndim + 1 or base.shape[0] != len(xs)
            or not base.flags.c_contiguous):
        return None
    start = base.__array_interface__["data"][0]
    step = base.strides[0]
    for i, x in enumerate(xs):
        if (x.__class__ is not np.ndarray or x.base is not base or x.shape != base.shape[1:]
                or x.strides != base.strides[1:] or x.__array_interface__["data"][0] != start + i * step):
            return None
    return base


class Region(_Fused):
    """Elementwise nodes as one step, optionally followed by the Softmax reading their result.

    ``refs[j]`` names member j's inputs: ``i >= 0`` the step's input i, ``~k`` member k's result.
    """

    _derived = ("_plan", "_memo", "_settled", "_block_plan", "_block_schedule", "_layout_memo", "_register_plan",
                "_chain")

    def __init__(self, keys: Sequence[Key], refs: Sequence[tuple[int, ...]], attrs: Sequence[dict[str, Any]],
                 ops: Sequence[str], labels: Sequence[str], softmax: Key | None = None,
                 softmax_attrs: dict[str, Any] | None = None):
        self.keys = list(keys) + ([softmax] if softmax is not None else [])
        self.refs = [tuple(r) for r in refs]
        self.attrs = [dict(a) for a in attrs]
        self.ops = list(ops)
        self.labels = list(labels)
        self.has_softmax = softmax is not None
        self.softmax_attrs = dict(softmax_attrs or {})
        self._bind()

    #: elements per block of a blocked region: 256 KB of float32, a few of them in L2. Each member
    #: is one numpy call a block, so smaller blocks pay more calls: BERT-bench's erf GELU (786K
    #: floats) 1.79 ms a layer in blocks of 64K, 1.94 in 32K, 2.5 in 16K (the whole run 1.012x
    #: faster than with 32K; DenseNet, Inception v2 and gpt-bench within 1% either way)
    BLOCK = 1 << 16

    def _bind(self) -> None:
        super()._bind()
        n = len(self.refs)
        self._memo: list[tuple[Any, bool] | None] = [None] * n
        #: (the step's input shapes, whether a member's result outgrew its operands) of the last call
        self._settled: tuple[tuple[Any, ...], bool] | None = None
        self._plan = [(fn, refs, attrs, elementwise.arithmetic_ufunc(fn) if len(refs) == 2 else None, op, label)
                      for fn, refs, attrs, op, label in zip(self.fns[:n], self.refs, self.attrs, self.ops, self.labels)]
        # members as block operations (ufunc or "erf"), or None when one of them has no block form
        block: list[tuple[Any, tuple[int, ...]]] | None = []
        for (_, refs, attrs, u, _, _), key in zip(self._plan, self.keys):
            if attrs or key[0] not in ("", "ai.onnx"):
                block = None
            elif u is not None:
                block.append((u, refs))
            elif key[1] in ("Erf", "Tanh") and len(refs) == 1:
                block.append(("erf" if key[1] == "Erf" else np.tanh, refs))
            else:
                block = None
            if block is None:
                break
        self._block_plan = block
        # per member: (operation, refs, where its result goes: -1 the step's output, k member k's
        # buffer (the first member result it reads), None a pooled one; members whose buffers it frees)
        self._block_schedule = []
        last = len(block or ()) - 1
        for j, (op, refs) in enumerate(block or ()):
            owned = [~r for r in refs if r < 0]
            into = -1 if j == last else (owned[0] if owned else None)
            self._block_schedule.append((op, refs, into, tuple(dict.fromkeys(k for k in owned if k != into))))
        self._layout_memo: tuple[Any, Any] | None = None
        self._chain = self._chain_plan()
        self._register_plan: tuple[int, tuple[list[tuple[Any, int, int, int]], int, bool]] | None = None

    def __call__(self, *xs: Any) -> Any:
        if self._chain is not None and (y := self._softmax_chain(xs)) is not None:
            return y
        y = self._blocked(xs) if self._block_plan is not None else None
        if y is None:
            y = self._whole(xs)
        if not self.has_softmax:
            return y
        return self._softmax(y)

    def _whole(self, xs: Sequence[Any]) -> Any:
        """Member by member; a binary ufunc kernel writes into a member result it reads (read once).
        A member whose result may outgrow its operands passes the engine's memory guard; once a call
        found that none does for the step's input shapes, calls with the same shapes skip the check."""
        vals: list[Any] = []
        ndarray = np.ndarray
        memo = self._memo
        sig = tuple([getattr(x, "shape", None) for x in xs])
        settled = self._settled
        guarded = settled is None or settled[0] != sig or settled[1]
        grew = False
        for j, (fn, refs, attrs, u, op, label) in enumerate(self._plan):
            args = [xs[r] if r >= 0 else vals[~r] for r in refs]
            res = None
            if u is not None:
                a, b = args
                if a.__class__ is ndarray and b.__class__ is ndarray and a.dtype == b.dtype and a.dtype.kind == "f":
                    for r, t, o in ((refs[0], a, b), (refs[1], b, a)):
                        if r < 0 and t.flags.writeable and (o.shape == t.shape or broadcasts_onto(o.shape, t.shape)):
                            res = u(a, b, out=t)
                            break
            if res is None:
                if guarded and op in limits.GUARDED_OPS:  # the engine's guard, where a result outgrows its operands
                    shapes = tuple([getattr(x, "shape", None) for x in args])
                    seen = memo[j]
                    if seen is None or seen[0] != shapes:
                        seen = (shapes, _grows(args))
                        memo[j] = seen  # one tuple: atomic for concurrent runs
                    if seen[1]:
                        grew = True
                        limits.check_step(op, label, args, attrs, limits.current().max_memory)
                res = fn(*args, **attrs)
            for r in refs:  # a member result is read once: drop it (the slot frees it in the plain program)
                if r < 0:
                    vals[~r] = None
            vals.append(res)
        if settled is None or settled[0] != sig:
            self._settled = (sig, grew)  # one tuple: atomic for concurrent runs
        return vals[-1]

    def _layout(self, xs: Sequence[Any]) -> tuple[tuple[int, ...], tuple[bool, ...]] | None:
        """(shape, which operands are full size) where the region runs block by block, else None:
        every operand float32, of one shape or a scalar, and every member reading at least one
        full-size value. Decided once per operand signature (the last one is kept)."""
        key = []
        for x in xs:
            if x.__class__ is not np.ndarray or x.dtype != np.float32:
                return None
            key.append(x.shape)
        sig = tuple(key)
        seen = self._layout_memo
        if seen is not None and seen[0] == sig:
            return seen[1]
        full = [k for k in sig if math.prod(k) != 1]
        layout: tuple[tuple[int, ...], tuple[bool, ...]] | None = None
        if full and all(k == full[0] for k in full) and math.prod(full[0]) and all(
                len(k) <= len(full[0]) for k in sig):
            big = tuple(math.prod(k) != 1 for k in sig)
            made: list[bool] = []
            for _, refs in self._block_plan or ():  # a member result is full size when one of its operands is
                made.append(any(big[r] if r >= 0 else made[~r] for r in refs))
            if all(made):
                layout = (full[0], big)
        self._layout_memo = (sig, layout)  # one tuple: atomic for concurrent runs
        return layout

    def _blocked(self, xs: Sequence[Any]) -> Array | None:
        """The region block by block (a small one as one block), or None where ``_layout`` says no.
        Each member writes into the buffer of the member result it reads, else into a temporary one
        that an earlier member's result has given back: a schedule over registers worked out once
        (``_registers``), so a block is the members' operations and little else (tiny-gpt's GELU of
        4K floats, 8.8 us of operations: 22.4 -> 16.1 us interleaved against a schedule followed
        member by member on every call, the same bits)."""
        layout = self._layout(xs)
        if layout is None:
            return None
        shape, big = layout
        n = math.prod(shape)
        plan, temps, erf = self._registers(len(xs))
        size = min(self.BLOCK, n)
        regs = [x.reshape(-1) if b else x.reshape(()) for x, b in zip(xs, big)]
        out = np.empty(n, dtype=np.float32)
        scratch = (np.empty(size, dtype=np.float32), np.empty(size, dtype=np.float32)) if erf else None
        if n == size:  # one block: the registers are the arrays themselves
            regs.append(out)
            for _ in range(temps):
                regs.append(np.empty(n, dtype=np.float32))
            _run_block(plan, regs, scratch)
            return out.reshape(shape)
        buffers = [np.empty(size, dtype=np.float32) for _ in range(temps)]
        for start in range(0, n, size):
            stop = min(start + size, n)
            count = stop - start
            part = [*(r[start:stop] if b else r for r, b in zip(regs, big)), out[start:stop],
                    *(t[:count] for t in buffers)]
            _run_block(plan, part, scratch if scratch is None or count == size
                       else (scratch[0][:count], scratch[1][:count]))
        return out.reshape(shape)

    def _registers(self, nin: int) -> tuple[list[tuple[Any, int, int, int]], int, bool]:
        """The block schedule over registers: the step's ``nin`` inputs, then its output, then
        temporaries. Per member (operation, operand register, second operand register or -1, result
        register); how many temporaries; whether erf's scratch is needed. Worked out once."""
        done = self._register_plan
        if done is not None and done[0] == nin:
            return done[1]
        where: list[int] = []  # member -> its result's register
        free: list[int] = []
        temps = 0
        plan = []
        for op, refs, into, release in self._block_schedule:
            regs = [r if r >= 0 else where[~r] for r in refs]
            if into is None:
                if free:
                    dest = free.pop()
                else:
                    dest = nin + 1 + temps
                    temps += 1
            else:
                dest = nin if into < 0 else where[into]
            free.extend(where[k] for k in release)
            where.append(dest)
            plan.append((op, regs[0], regs[1] if len(regs) > 1 else -1, dest))
        schedule = (plan, temps, any(op == "erf" for op, *_ in plan))
        self._register_plan = (nin, schedule)  # one tuple: atomic for concurrent runs
        return schedule

    def _chain_plan(self) -> ScoreChain | None:
        """A Softmax region whose members form one chain from the step's first input (the scores),
        each an Add, Sub, Mul or Div of the running value by another step input, or a Where keeping
        it or picking another step input by a condition (the attention scale and mask), as a
        ``ScoreChain`` over the step's inputs. Else None."""
        if not self.has_softmax or self.fns[-1] is not activation.softmax:
            return None
        members = []
        for j, ((fn, refs, attrs, _, _, _), key) in enumerate(zip(self._plan, self.keys)):
            running = 0 if j == 0 else ~(j - 1)
            # every other input a step input past the scores: not another member's result, nor the scores again
            if attrs or key[0] not in ("", "ai.onnx") or any(r <= 0 for r in refs if r != running):
                return None
            m = member(fn, refs, running)
            if m is None:
                return None
            members.append(m)
        return ScoreChain(members)

    def _softmax_chain(self, xs: Sequence[Any]) -> Array | None:
        """The chain and the softmax as two compiled passes a row around numpy's exp (``ScoreChain``):
        the bits of the members' numpy calls and ``activation.softmax_rows`` (tiny-gpt's scale,
        causal mask and softmax of 4x16x16: 12.8 -> 10.4 us interleaved, 1.23-1.27x; whole runs,
        against member by member: BERT-bench 1.020x, gpt-bench 1.011x). None where it does not apply."""
        x = xs[0]
        if x.__class__ is not np.ndarray or self.softmax_attrs.get("axis", -1) not in (-1, x.ndim - 1):
            return None
        out = self._chain.shift(x, xs)  # type: ignore[union-attr]
        if out is not None:
            np.exp(out, out=out)
            jit.loops().softmax_scale(out.reshape(-1, x.shape[-1]))
        return out

    def _softmax(self, x: Any) -> Any:
        """The Softmax kernel, or its row computation (``activation.softmax_rows``) in x's own buffer."""
        fn = self.fns[-1]
        axis = self.softmax_attrs.get("axis", -1)
        if (fn is activation.softmax and x.__class__ is np.ndarray and x.dtype.char in "fd"
                and x.ndim and x.size and axis in (-1, x.ndim - 1) and x.flags.writeable and x.flags.c_contiguous):
            w = x.reshape(-1, x.shape[-1])
            activation.softmax_rows(w, out=w)
            return x
        return fn(x, **self.softmax_attrs)


def _run_block(plan: list[tuple[Any, int, int, int]], regs: list[Array], scratch: tuple[Array, Array] | None
               ) -> None:
    """One block of a region: each member's operation on its registers (``Region._registers``);
    ``scratch``, two buffers of the block's size for an erf."""
    for op, a, b, into in plan:
        if b >= 0:
            op(regs[a], regs[b], out=regs[into])
        elif op == "erf":
            assert scratch is not None
            elementwise.erf_float32_block(regs[a], regs[into], scratch[0], scratch[1])
        else:
            op(regs[a], out=regs[into])


class ConcatChain(_Fused):
    """A Concat whose result shares one buffer with the Concats that extend it: each of those reads
    the previous result as its first input along the same axis (DenseNet's dense blocks), so the
    chain's first step allocates the last one's size and every step appends its other inputs
    after what is there, returning a view of the prefix written so far. No result is copied again
    into the next, and the heap sees one allocation a chain instead of one a little larger than
    the last at every step (DenseNet-121: 58 Concats, run peak RSS 57.5 -> 53.8 MB). The values are
    np.concatenate's; where a call does not fit (leading dimensions other than 1, a first input
    that is not the chain's writable prefix, mixed dtypes) the step is the Concat kernel itself.
    """

    def __init__(self, concat: Key, total: int, head: bool):
        self.keys = [concat]
        self.total = total    # the chain's last result's size along the axis
        self.head = head      # the chain's first step: it allocates the buffer
        self._bind()

    def __call__(self, *xs: Any, **attrs: Any) -> Any:
        y = self._append(xs, attrs.get("axis", 1))
        return self.fns[0](*xs, **attrs) if y is None else y

    def _append(self, xs: Sequence[Any], axis: int) -> Array | None:
        x0 = xs[0]
        if x0.__class__ is not np.ndarray or not all(x.__class__ is np.ndarray and x.dtype == x0.dtype
                                                     and x.ndim == x0.ndim for x in xs):
            return None
        a = axis + x0.ndim if axis < 0 else axis
        if not 0 <= a < x0.ndim or math.prod(x0.shape[:a]) != 1:
            return None
        lead, rest = x0.shape[:a], x0.shape[a + 1:]
        if any(x.shape[:a] != lead or x.shape[a + 1:] != rest for x in xs[1:]):
            return None
        inner = math.prod(rest)
        if self.head:
            buf, start, parts = np.empty((self.total, inner), dtype=x0.dtype), 0, xs
        else:
            buf = x0.base  # the head's buffer (a view's base is the array owning the memory)
            if (buf.__class__ is not np.ndarray or buf.base is not None or buf.dtype != x0.dtype
                    or buf.size != self.total * inner or not x0.flags.writeable or not x0.flags.c_contiguous
                    or x0.__array_interface__["data"][0] != buf.__array_interface__["data"][0]):
                return None
            buf, start, parts = buf.reshape(self.total, inner), x0.shape[a], xs[1:]
        end = start + sum(x.shape[a] for x in parts)
        if end > self.total:
            return None
        for x in parts:
            n = x.shape[a]
            buf[start:start + n] = x.reshape(n, inner)
            start += n
        return buf[:end].reshape(*lead, end, *rest)


__all__ = ["Array", "ConcatChain", "Key", "MatMulBias", "MatMulGroup", "Region"]
