"""How long the largest spec netspec accepts takes to read and build, against AlexNet's.

    python benchmarks/spec_limits.py

The spec is generated to sit just under both YAML limits (netspec.spec.document): as many
conv/relu layers as MAX_VALUES values allow, padded with a comment to just under MAX_BYTES.
Each stage is timed in the same run for both specs (best of three, after one warm-up), and
the table gives the ratio to AlexNet's.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from netspec import build_graph, compile, load_spec
from netspec.spec.document import MAX_BYTES, MAX_VALUES

ROOT = Path(__file__).resolve().parent.parent
CONV = "  - {{name: conv{i}, type: conv, filters: 8, kernel: 3, padding: 1}}"  # 11 values
RELU = "  - {{name: relu{i}, type: relu}}"  # 5 values


def near_limit_spec() -> tuple[str, int]:
    head = ["name: near_limit", "input: [3, 32, 32]", "classes: 10", "layers:"]
    layers, values, i = [], 14, 0  # the head's keys and values
    while values + 16 + 7 < MAX_VALUES:
        layers += [CONV.format(i=i), RELU.format(i=i)]
        values, i = values + 16, i + 1
    layers.append("  - {name: fc, type: linear, units: classes}")
    body = "\n".join(head + layers) + "\n"
    return "# " + "x" * (MAX_BYTES - len(body) - 100) + "\n" + body, len(layers)


def best_of(fn: Callable[[], object], times: int = 3) -> float:
    fn()
    results = []
    for _ in range(times):
        start = time.perf_counter()
        fn()
        results.append(time.perf_counter() - start)
    return min(results)


def stages(path: Path) -> dict[str, float]:
    spec = load_spec(path)

    def forward() -> None:
        model = compile(spec, device="meta")
        with torch.no_grad():
            model(torch.empty(2, *spec.input, device="meta"))

    return {
        "read and validate": best_of(lambda: load_spec(path)),
        "build the graph": best_of(lambda: build_graph(spec)),
        "compile and run on meta": best_of(forward),
    }


def main() -> None:
    text, layers = near_limit_spec()
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "near-limit.yaml"
        big.write_text(text)
        reference = stages(ROOT / "specs/alexnet.yaml")
        measured = stages(big)
    print(f"near-limit spec: {len(text.encode()):,} bytes, {layers} layers")
    print(f"{'stage':<26}{'alexnet.yaml':>14}{'near limit':>14}{'ratio':>8}")
    for name, seconds in measured.items():
        ref = reference[name]
        print(f"{name:<26}{ref:>13.3f}s{seconds:>13.3f}s{seconds / ref:>8.1f}")


if __name__ == "__main__":
    main()
