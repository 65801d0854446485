"""Graph attributes (If/Loop/Scan bodies) as engine programs, and the scope their kernels read: a
body compiles on first use into a ``Program`` of its own, and names it reads but neither defines nor
receives resolve in the enclosing program's live values, then in that program's own outer scope."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import onnx

from hal.errors import RunError
from hal.graph.ir import Node, graph_reads

if TYPE_CHECKING:
    from hal.engine.program import Program


class Subgraph:
    """A graph attribute (If/Loop/Scan body) compiled lazily; outer names resolve in the scope."""

    def __init__(self, proto: onnx.GraphProto, opsets: dict[str, int]):
        self.proto = proto
        self.opsets = opsets
        self._program: Program | None = None
        self.input_names = [i.name for i in proto.input]
        self.output_names = [o.name for o in proto.output]
        #: every name the body reads, nested bodies included (outer names among them)
        self.reads = graph_reads(proto)

    def _compile(self) -> Program:
        if self._program is None:
            from hal.engine.program import Program, steps_for_nodes
            from hal.graph.load import from_proto

            model = onnx.helper.make_model(
                self.proto, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in self.opsets.items()])
            g = from_proto(model, where=f"subgraph {self.proto.name!r}", check=False, infer_shapes=False)
            # Names the body reads but neither defines nor receives come from the enclosing scope.
            defined = {i.name for i in g.inputs} | set(g.initializers) | {o for n in g.nodes for o in n.outputs}
            free = sorted(n for n in self.reads if n not in defined)
            self._program = Program(g, steps_for_nodes(g, g.nodes), extra_inputs=free)
        return self._program

    def __call__(self, *inputs: Any, scope: Mapping[str, Any] | None = None) -> list[Any]:
        prog = self._compile()
        feeds = dict(zip(self.input_names, inputs))
        outer = {n: scope[n] for n in prog.extra_inputs if scope is not None and n in scope}
        absent = [n for n in prog.extra_inputs if n not in outer]
        if absent:  # running on would hand the body None for a tensor
            raise RunError(f"the body reads {', '.join(map(repr, absent))}, which the enclosing graph does not "
                           "provide", where=f"subgraph {self.proto.name!r}")
        return prog.run_list(feeds, outer)


class Scope(Mapping[str, Any]):
    """The values visible to a control-flow kernel: the program's live slots, then the outer scope."""

    def __init__(self, slots: dict[str, int], env: list[Any], outer: Mapping[str, Any] | None):
        self._slots, self._env, self._outer = slots, env, outer

    def __getitem__(self, k: str) -> Any:
        i = self._slots.get(k)
        if i is not None and self._env[i] is not None:
            return self._env[i]
        if self._outer is not None:
            return self._outer[k]
        raise KeyError(k)

    def __iter__(self) -> Iterator[str]:
        yield from (k for k, i in self._slots.items() if self._env[i] is not None)
        if self._outer is not None:
            yield from self._outer

    def __len__(self) -> int:
        return sum(1 for _ in self)


def subgraph_attrs(node: Node, opsets: dict[str, int]) -> dict[str, Any]:
    """A node's attributes with each graph (or list of graphs) as a ``Subgraph``."""
    attrs = dict(node.attrs)
    for k, v in attrs.items():
        if isinstance(v, onnx.GraphProto):
            attrs[k] = Subgraph(v, opsets)
        elif isinstance(v, list) and v and isinstance(v[0], onnx.GraphProto):
            attrs[k] = [Subgraph(x, opsets) for x in v]
    return attrs
