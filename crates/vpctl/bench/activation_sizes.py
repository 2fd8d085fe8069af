"""Bytes a model-parallel split of an ONNX model would ship between two devices, for comparison with the
bytes variant parallelism puts on the wire (docs/benchmarks.md).

For every cut of the graph in topological order, the bytes crossing the cut are the sizes of all tensors produced
before it and consumed after it (batch 1, float32 as stored). Prints the cut at the middle of the network (by
node count) and the smallest cut in the middle third (the most favourable split for model parallelism).

Usage: .venv/bin/python crates/vpctl/bench/activation_sizes.py models/fmnist/baseline.onnx
"""

from __future__ import annotations

import sys

import onnx
from onnx import shape_inference

ELEM_BYTES = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.UINT8: 1, onnx.TensorProto.INT64: 8}


def tensor_bytes(vi: onnx.ValueInfoProto) -> int | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    n = 1
    for d in t.shape.dim:
        n *= d.dim_value if d.HasField("dim_value") else 1  # symbolic (batch) dimension -> 1
    return n * ELEM_BYTES.get(t.elem_type, 4)


def main(path: str) -> None:
    model = shape_inference.infer_shapes(onnx.load(path))
    g = model.graph
    sizes = {vi.name: tensor_bytes(vi) for vi in list(g.value_info) + list(g.output)}
    inits = {i.name for i in g.initializer}
    nodes = list(g.node)
    produced = {out: i for i, n in enumerate(nodes) for out in n.output}
    last_use: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            if name in produced and name not in inits:
                last_use[name] = i
    cuts = []
    for c in range(1, len(nodes)):
        crossing = [t for t, p in produced.items() if p < c and last_use.get(t, -1) >= c]
        cuts.append((c, sum(sizes.get(t) or 0 for t in crossing), crossing))
    mid = cuts[len(cuts) // 2]
    third = cuts[len(cuts) // 3 : 2 * len(cuts) // 3]
    best = min(third, key=lambda x: x[1])
    print(f"{path}: {len(nodes)} nodes")
    print(f"cut at the middle (after node {mid[0]}): {mid[1]} bytes ({', '.join(mid[2])})")
    print(f"smallest cut in the middle third (after node {best[0]}): {best[1]} bytes ({', '.join(best[2])})")


if __name__ == "__main__":
    main(sys.argv[1])
