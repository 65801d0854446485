"""The kernel engine every target executes through: compile once into flat steps, run many.

A ``Program`` is a list of ``Step``s over numbered value slots. Compiling resolves kernels, slots
and buffer lifetimes up front; a run fills the input slots, calls each step's function on its
slots, frees each value after its last use (liveness), and reads the output slots — no graph walk,
no dict building per node. Targets build their own steps (fused kernels, numeric policies) and
hand them to ``Program``; ``steps_for_nodes`` gives the plain one-kernel-per-node steps.
"""

from hal.engine.fusion import chain_concats, fused_runs, fused_steps, reference_program
from hal.engine.guards import SHAPE_SIZED_OPS
from hal.engine.program import (
    HOIST_LIMIT_BYTES,
    Program,
    Step,
    kernel_step,
    steps_for_nodes,
)
from hal.engine.subgraph import Subgraph

__all__ = ["HOIST_LIMIT_BYTES", "SHAPE_SIZED_OPS", "Program", "Step", "Subgraph", "chain_concats", "fused_runs",
           "fused_steps", "kernel_step", "reference_program", "steps_for_nodes"]
