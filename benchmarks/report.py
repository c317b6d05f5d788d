"""Run the benchmark suite and write ``benchmarks/results/<device>.md`` (tables) and ``<device>.png``.

    python benchmarks/report.py                 # runs pytest benchmarks, then writes the report
    python benchmarks/report.py --json FILE     # report from an existing pytest-benchmark JSON

The device name is the CPU model (or the GPU's name); torch and triton versions and the thread
count go into the file. Ratios are medians measured side by side in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
PROVIDERS = ["published", "reference", "compiled", "native"]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    return cpu_name()


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_suite(json_path: str, extra: list[str]) -> None:
    cmd = [sys.executable, "-m", "pytest", HERE, "-q", "-p", "no:logging", f"--benchmark-json={json_path}", *extra]
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def write_report(data: dict, device: str, out_dir: str, command: str) -> str:
    import torch

    rows = defaultdict(dict)  # (op, mode) -> provider -> bench
    shapes = {}
    for b in data["benchmarks"]:
        info = b["extra_info"]
        if info["device"] != device:
            continue
        rows[(info["op"], info["mode"])][info["provider"]] = b
        shapes[info["op"]] = info["shape"]
    if not rows:
        return ""
    name = device_name(device)
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    threads = data["benchmarks"][0]["extra_info"].get("threads", os.environ.get("SEMNORM_BENCH_THREADS", "2"))
    lines = [
        f"# semnorm benchmarks on {name}",
        "",
        f"- device: {name} ({device}); torch {torch.__version__}; triton {triton_version}; "
        f"CUDA {torch.version.cuda}; threads {threads}",
        f"- date: {data.get('datetime', '')}; command: `{command}`",
        "- times: median (ms) of 5 rounds after 1 warm-up, forward or forward+backward (gradients to every float "
        "input); ratio = provider / native, side by side in one run",
        "- GB/s and % copy: bytes the minimal forward algorithm must move / native forward time, against a "
        "64 MiB copy measured in the same run",
        "",
        "- peak MiB: peak memory of one call above what was allocated before it (CPU: torch allocator events "
        "recorded by the profiler; CUDA: max_memory_allocated), published / native",
        "",
        "| op | mode | published | reference | compiled | native | published / native | compiled / native | native GB/s | % of copy | peak MiB published / native |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (op, mode), by in sorted(rows.items()):
        med = {p: by[p]["stats"]["median"] * 1e3 for p in PROVIDERS if p in by}
        nat = med.get("native")
        cells = [f"{med[p]:.2f}" if p in med else "-" for p in PROVIDERS]
        ratio = lambda p: f"{med[p] / nat:.1f}x" if p in med and nat else "-"  # noqa: E731
        info = by.get("native", {}).get("extra_info", {})
        gbps = f"{info['gbps']:.1f}" if "gbps" in info else "-"
        pct = f"{info['pct_copy']:.0f}%" if "pct_copy" in info else "-"
        mem = {p: by[p]["extra_info"]["peak_bytes"] / 2**20 for p in ("published", "native") if "peak_bytes" in by.get(p, {}).get("extra_info", {})}
        peak = f"{mem['published']:.0f} / {mem['native']:.0f}" if len(mem) == 2 else "-"
        lines.append(f"| {op} | {mode} | " + " | ".join(cells) + f" | {ratio('published')} | {ratio('compiled')} | {gbps} | {pct} | {peak} |")
    lines += ["", "Shapes:", ""] + [f"- {op}: {shape}" for op, shape in sorted(shapes.items())]
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, device if device == "cpu" else slug(name))
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    _plot(rows, base + ".png", name)
    return base + ".md"


def _plot(rows, path: str, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot written")
        return
    keys = sorted(k for k in rows if k[1] == "forward+backward") or sorted(rows)
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(keys) + 2))
    height = 0.8 / len(PROVIDERS)
    for i, p in enumerate(PROVIDERS):
        vals = [rows[k][p]["stats"]["median"] * 1e3 if p in rows[k] else 0 for k in keys]
        ax.barh([j + i * height for j in range(len(keys))], vals, height=height, label=p)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(keys))])
    ax.set_yticklabels([f"{op} ({mode})" for op, mode in keys])
    ax.set_xscale("log")
    ax.set_xlabel("median time (ms, log scale)")
    ax.set_title(f"semnorm ops on {title}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="existing pytest-benchmark JSON (skip running the suite)")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (e.g. -k class_modulate)")
    args = parser.parse_args()
    path = args.json
    if path is None:
        path = os.path.join(tempfile.mkdtemp(), "bench.json")
        run_suite(path, args.pytest_args)
    with open(path) as f:
        data = json.load(f)
    command = shlex.join(["python", "benchmarks/report.py", *args.pytest_args])
    for device in sorted({b["extra_info"]["device"] for b in data["benchmarks"]}):
        written = write_report(data, device, args.out, command)
        if written:
            print("wrote", written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
