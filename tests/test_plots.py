"""hal profile --plot: each target kind's picture draws what its program did, and is a real PNG."""

from __future__ import annotations

import struct
import warnings

import pytest

import hal
from hal import plots
from hal.cli import _routes
from hal.feeds import random_feeds
from hal.plugins import get_target

pytest.importorskip("matplotlib")  # hal.plots imports it only when it draws


@pytest.fixture(scope="module")
def sessions() -> dict[str, hal.InferenceSession]:
    """tiny-gpt compiled and run once on one target of each kind (and cpu's host timeline)."""
    out = {}
    for target in ("gpu", "lpu", "wafer", "cpu"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sess = hal.InferenceSession("zoo:tiny-gpt", target=target)
        sess.run(None, random_feeds(sess.graph, seed=0))
        out[target] = sess
    return out


def _figure():
    plt = plots._plt()
    fig, ax = plt.subplots()
    return plt, fig, ax


def _png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("target", ["gpu", "lpu", "cpu"])
def test_a_timeline_draws_one_bar_per_event_in_its_lane(sessions, target) -> None:
    events = sessions[target].trace()
    spans = [e for e in events if e.get("ph") == "X"]
    assert spans
    plt, fig, ax = _figure()
    try:
        plots.gantt(ax, events, "t", "lane")
        bars = ax.patches
        assert len(bars) == len(spans)
        lanes = list(dict.fromkeys(str(e["tid"]) for e in spans))  # (one process: lanes by thread)
        assert [t.get_text() for t in ax.get_yticklabels()] == lanes
        scale, _ = plots._time_unit(max(s["ts"] + s["dur"] for s in spans))
        for bar, e in zip(bars, spans):  # each bar in its event's lane, starting at its start
            assert abs(bar.get_y() + bar.get_height() / 2 - lanes.index(str(e["tid"]))) < 1e-9
            assert bar.get_x() == pytest.approx(e["ts"] * scale)
    finally:
        plt.close(fig)


def test_the_roofline_plots_every_kernel_that_did_work_under_the_roofs(sessions) -> None:
    sess = sessions["gpu"]
    spec = get_target("gpu").spec
    kernels = [k for k in sess.report.kernels if k.flops > 0 and k.bytes > 0 and k.time_s > 0]
    assert kernels
    peak, bandwidth = spec.hw("peak_flops_bf16"), spec.hw("hbm_bandwidth")
    plt, fig, ax = _figure()
    try:
        plots.roofline(ax, sess.report.kernels, peak, bandwidth, "r")
        points = sorted((float(x), float(y)) for c in ax.collections for x, y in c.get_offsets())
        expected = sorted((k.flops / k.bytes, k.flops / k.time_s / 1e12) for k in kernels)
        assert [v for p in points for v in p] == pytest.approx([v for p in expected for v in p], rel=1e-6)
        for x, y in points:  # the cost model never achieves more than the roof at that intensity
            assert y * 1e12 <= min(peak, x * bandwidth) * (1 + 1e-6)
    finally:
        plt.close(fig)


def test_the_placement_map_draws_each_stage_region_on_the_mesh(sessions) -> None:
    sess = sessions["wafer"]
    regions = [[int(v) for v in k.unit.split(",")] for k in sess.report.kernels]
    assert regions and all(len(r) == 4 for r in regions)
    plt, fig, ax = _figure()
    try:
        plots.placement_map(ax, sess.report.kernels, (762, 1172), _routes(sess), "p")
        rects = [(p.get_x(), p.get_y(), p.get_width(), p.get_height()) for p in ax.patches]
        assert rects == [tuple(float(v) for v in r) for r in regions]
        assert ax.get_xlim() == (0, 762) and ax.get_ylim() == (1172, 0)
        assert len(ax.lines) == 2 * len(_routes(sess))  # a route's path and its end mark
    finally:
        plt.close(fig)


@pytest.mark.parametrize("target", ["gpu", "lpu", "wafer"])
def test_profile_picture_writes_a_png_for_each_kind(sessions, target, tmp_path) -> None:
    sess = sessions[target]
    spec = get_target(target).spec
    path = plots.profile_picture(spec.kind, sess.report, sess.trace(), spec, tmp_path / "p.png", routes=_routes(sess))
    assert path == tmp_path / "p.png"
    width, height = _png_size(path)
    assert width > 400 and height > 300
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]  # written atomically: no temporary left


@pytest.mark.parametrize(("precision", "roof"), [("exact", "fp32"), ("native", "tf32"), ("bf16", "bf16")])
def test_the_gpu_roofline_is_that_of_the_precision_the_program_ran_at(sessions, monkeypatch, tmp_path,
                                                                      precision, roof) -> None:
    # an exact (fp32) run had been drawn under the bf16 roof
    spec = get_target("gpu").spec
    drawn = []
    monkeypatch.setattr(plots, "roofline", lambda ax, kernels, peak, bw, title: drawn.append((peak, title)))
    report = sessions["gpu"].report.model_copy(update={"precision": precision})
    plots.profile_picture("gpu", report, [], spec, tmp_path / "p.png")
    assert drawn == [(spec.hw(f"peak_flops_{roof}"), f"gpu: roofline ({roof} peak, HBM)")]
