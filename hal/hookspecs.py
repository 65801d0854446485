"""The accelerator interface, as pluggy hook specifications (HAL API 1.0).

A plugin is a module (found through the ``hal.plugins`` entry-point group) that sets
``HAL_API_VERSION = "MAJOR.MINOR"`` and implements some of these hooks with ``@hal.hookimpl``.
The core never imports a plugin by name: the built-in ``cpu``, ``gpu``, ``lpu`` and ``wafer``
targets are registered through the same entry points as a third party's. Each hook is called on
each plugin separately (``HAL_TRACE_HOOKS=1`` traces each call on pluggy's hook tracer), so one plugin's failure
is recorded against it and never reaches the others. A hook returns a list (None counts as an empty
one); anything else it returns, or anything it raises (``SystemExit`` too), fails its plugin. So
does a function marked ``@hal.hookimpl`` under a name that is not one of these hooks (a typo), or a
function named like one of these hooks without the marker (hal would never call it).
``specs/interface.md`` is the normative text; these docstrings are the contract in code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from hal.target import Target

PROJECT = "hal"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def hal_targets() -> list[Target]:
    """Return the targets this plugin provides.

    Called once per process, at discovery, after the plugin's API version was accepted. Each item
    must satisfy the ``hal.target.Target`` protocol: a ``spec`` (a valid ``TargetSpec`` whose name
    is unique among all plugins), ``capability(graph, options)``, ``compile(graph, options)`` and
    ``load(blob)``. Target construction should be cheap: parse spec sheets here, build nothing
    model-specific. A plugin that raises here, returns something other than a list, or returns a
    spec that does not validate, is skipped and recorded as a ``PluginError``; its targets are not
    offered. (``hal.specs.load_spec_sheet`` raises an ``InputError`` naming the sheet and each bad key.)
    """


@hookspec
def hal_kernels() -> list[Any]:
    """Return extra kernels as ``hal.kernels.KernelDef`` objects (e.g. for a custom-op domain).

    Called once at discovery. The kernels join the one registry that every target executes
    through, so the reference ``cpu`` target can run (and check) a vendor's custom ops too. Use a
    domain of your own for them (e.g. ``com.acme``): a kernel for a (domain, op) that hal's own
    kernels implement (``Relu`` in ``""``, any ``since``) would change the reference every target is
    checked against, and one that another plugin already registered would replace theirs; either
    fails the plugin (a ``PluginError``), and its kernels, targets and passes are not offered.
    """


@hookspec
def hal_graph_passes() -> list[Any]:
    """Return graph passes: callables ``pass_(graph: hal.graph.ir.Graph) -> Graph``.

    Called once at discovery; the passes are offered to targets by their ``__name__``
    (``hal.plugins.registry().graph_passes``), never applied to another plugin's targets implicitly;
    a name another plugin's pass holds fails the plugin. A pass must keep the graph's outputs,
    numerics and topological order.
    """


@hookspec
def hal_conformance_cases() -> list[Any]:
    """Return extra conformance cases: objects with ``name``, ``model`` (ModelProto), ``data_sets``
    ([(inputs, expected outputs)]), ``rtol`` and ``atol`` — the shape of onnx's node test cases.

    Called by the conformance suite when it collects; the cases run on every target under test.
    """
