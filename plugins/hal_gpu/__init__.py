"""The gpu target plugin: an H100-class GPU (and, from a second sheet, an MI300X-class one) as kernels.

Rooms, in the order a compile walks them:

- ``plugin.py``    the ``hal_targets`` hook: one ``GpuTarget`` per spec sheet in specs/targets/
- ``compiler.py``  ``GpuTarget``: capability, compile (lower, place, cost, build), load
- ``patterns.py``  what the compiler recognises: op classes, attention, KV-cache appends
- ``fusion.py``    nodes -> kernels (epilogues, elementwise chains, fused attention), kernel order
- ``tiling.py``    tiles, grids and waves over the SMs
- ``parallel.py``  tensor parallelism over the GPUs of one node, and its collectives
- ``cost.py``      the roofline per kernel, the timeline, energy
- ``hardware.py``  the sheet's numbers as the cost model reads them
- ``executor.py``  the executable: kernel steps through the engine, precision policies
- ``attention.py`` the fused attention kernel's blocked online-softmax numerics
"""
