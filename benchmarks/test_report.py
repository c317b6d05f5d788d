"""benchmarks/report.py on a synthetic pytest-benchmark JSON: the tables, the SPEC targets table and the
"what limits the misses" texts follow the numbers given (no suite run, so it is fast and untimed)."""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import report  # noqa: E402

MIB = 2**20


def _bench(op, mode, provider, ms, peak_mib=10.0, **extra):
    info = dict(op=op, mode=mode, provider=provider, device="cpu", shape=f"{op} shape", threads=2,
                peak_bytes=int(peak_mib * MIB), **extra)
    return {"extra_info": info, "stats": {"median": ms / 1e3, "iqr": ms / 1e4}}


def _data(broadcast_native_ms: float, floor_ms: float) -> dict:
    """Every target's rows, all met except (depending on the arguments) region_broadcast's."""
    b = []
    for name, pub, comp, nat in (("CLADE", 200, 100, 10), ("SPADE", 600, 300, 100), ("SEAN", 2000, 2000, 200),
                                 ("SCN", 100, 40, 20)):
        for provider, ms in (("published", pub), ("compiled", comp), ("native", nat)):
            b.append(_bench(f"layer {name}", "forward+backward", provider, ms, peak_mib=100 if provider == "published" else 40))
    for op in ("region_pool", "region_broadcast"):
        for mode in ("forward", "forward+backward"):
            native = broadcast_native_ms if (op, mode) == ("region_broadcast", "forward") else 1.0
            extra = dict(out_bytes=32 * MIB, fresh_output_floor=floor_ms / 1e3, copy_bandwidth=20e9, bytes=33 * MIB,
                         gbps=1.0, pct_copy=5.0) if mode == "forward" else {}
            b.append(_bench(op, mode, "published", 100.0))
            b.append(_bench(op, mode, "compiled", 3.0))
            b.append(_bench(op, mode, "native", native, **extra))
    for name, ms in (("SPADE", 1000), ("CLADE", 400), ("SEAN", 2000)):
        for mode in ("training step", "inference"):
            b.append(_bench(f"generator {name}", mode, "published", 2 * ms))
            b.append(_bench(f"generator {name}", mode, "native", ms))
    return {"datetime": "2026-01-01T00:00:00", "benchmarks": b}


@pytest.fixture(autouse=True)
def _no_plot(monkeypatch):
    monkeypatch.setattr(report, "_plot", lambda rows, path, title: None)


def _write(tmp_path, data) -> str:
    path = report.write_report(data, "cpu", str(tmp_path), "python benchmarks/report.py")
    with open(path) as f:
        return f.read()


def test_all_targets_met(tmp_path):
    text = _write(tmp_path, _data(broadcast_native_ms=1.0, floor_ms=0.5))
    targets = text.split("## SPEC section 6 targets in this run")[1]
    assert "**no**" not in targets
    assert "| region_broadcast vs the per-region loop (forward) | 100.0x (goal >= 50x) | yes |" in targets
    assert "| SPADE / CLADE generator runtime with semnorm layers >= the CLADE paper's | 2.50 (goal >= 2.40) | yes |" in targets
    assert "What limits the misses" not in text
    assert "| CLADE layer peak training memory <= 1/2 of published | 0.40 (goal <= 0.5) | yes |" in targets


@pytest.mark.parametrize("floor_ms, faults", [(6.0, True), (1.9, False)])
def test_region_broadcast_miss_explained_from_the_numbers(tmp_path, floor_ms, faults):
    # 32 MiB written at 20 GB/s (read + write) into a reused buffer: 3.36 ms
    text = _write(tmp_path, _data(broadcast_native_ms=5.0, floor_ms=floor_ms))
    assert "| region_broadcast vs the per-region loop (forward) | 20.0x (goal >= 50x) | **no** |" in text
    limit = text.split("### What limits the misses (profiled)")[1]
    assert f"takes {floor_ms:.2f} ms in this run" in limit
    assert "would take 3.36 ms" in limit
    assert ("page faults" in limit) == faults
    assert "torch.compile's gather 3.00 ms" in limit
    assert f"published / floor = {100 / floor_ms:.0f}x" in limit and "the op reaches 20x" in limit


def test_report_from_json_file(tmp_path, monkeypatch):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(_data(broadcast_native_ms=1.0, floor_ms=0.5)))
    monkeypatch.setattr(sys, "argv", ["report.py", "--json", str(path), "--out", str(tmp_path / "out")])
    assert report.main() == 0
    assert (tmp_path / "out" / "cpu.md").read_text().startswith("# semnorm benchmarks on ")
