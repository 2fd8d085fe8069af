"""Model parallelism (MP), the baseline scheme variant parallelism is compared with: one ONNX graph cut into N
consecutive stages whose multiply-accumulates are balanced, as MP systems place a network on N devices. Stage i
takes the tensor(s) crossing cut i-1 and yields the tensor(s) crossing cut i; the first takes the graph's input,
the last returns its output.

Only cuts crossed by exactly one activation tensor are used (inside a residual block two tensors cross), so every
hop ships one float32 tensor. Weights (initializers) never cross: each stage holds its own.

    python -m vptrain.mpsplit MODEL.onnx N OUT_DIR    # writes stage0.onnx .. stage{N-1}.onnx and stages.json
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference, utils


@dataclass(frozen=True)
class Cut:
    """A place to cut: after node `after` (index in topological order), crossed by `tensors`."""

    after: int
    tensors: tuple[str, ...]
    macs_before: int


def _dims(vi: onnx.ValueInfoProto) -> list[int]:
    """Static dimensions of a value (symbolic ones, like the batch, count as 1)."""
    return [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]


def node_macs(model: onnx.ModelProto) -> list[int]:
    """Multiply-accumulates of each node at batch 1 (Conv, Gemm, MatMul; everything else counts 0)."""
    inferred = shape_inference.infer_shapes(model)
    g = inferred.graph
    shapes = {vi.name: _dims(vi) for vi in [*g.value_info, *g.input, *g.output]}
    shapes.update({t.name: list(t.dims) for t in g.initializer})
    out = []
    for node in g.node:
        macs = 0
        if node.op_type == "Conv":
            w, y = shapes.get(node.input[1]), shapes.get(node.output[0])
            if w and y:
                macs = int(np.prod(y)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, y = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and y:
                macs = int(np.prod(y)) * a[-1]
        out.append(macs)
    return out


def cuts(model: onnx.ModelProto) -> list[Cut]:
    """Every position between two nodes, with the non-weight tensors that cross it."""
    g = model.graph
    weights = {t.name for t in g.initializer}
    produced_at = {i.name: -1 for i in g.input if i.name not in weights}
    last_use: dict[str, int] = {}
    for i, node in enumerate(g.node):
        for t in node.input:
            if t and t not in weights:
                last_use[t] = i
        for t in node.output:
            produced_at[t] = i
    outputs = {o.name for o in g.output}
    for t in outputs:
        last_use[t] = len(g.node)
    macs = node_macs(model)
    result, acc = [], 0
    for i in range(len(g.node) - 1):
        acc += macs[i]
        crossing = tuple(sorted(t for t, p in produced_at.items() if p <= i and last_use.get(t, -2) > i))
        result.append(Cut(i, crossing, acc))
    return result


def plan(model: onnx.ModelProto, n: int) -> list[Cut]:
    """n-1 single-tensor cuts, each the one whose MACs-before is nearest to k/n of the total (k = 1..n-1)."""
    if n < 1:
        raise ValueError("need at least one stage")
    total = sum(node_macs(model))
    single = [c for c in cuts(model) if len(c.tensors) == 1]
    chosen: list[Cut] = []
    for k in range(1, n):
        target = total * k / n
        after = chosen[-1].after if chosen else -1
        options = [c for c in single if c.after > after]
        if not options:
            raise ValueError(f"the graph has too few single-tensor cuts for {n} stages")
        chosen.append(min(options, key=lambda c: abs(c.macs_before - target)))
    return chosen


def split(path: Path, n: int, out: Path) -> dict:
    """Writes the n stage graphs of the model at `path` into `out`, plus stages.json describing them."""
    model = onnx.load(str(path))
    g = model.graph
    weights = {t.name for t in g.initializer}
    inputs = [i.name for i in g.input if i.name not in weights]
    outputs = [o.name for o in g.output]
    chosen = plan(model, n)
    boundaries = [inputs, *[list(c.tensors) for c in chosen], outputs]
    macs = node_macs(model)
    edges = [-1, *[c.after for c in chosen], len(g.node) - 1]
    inferred = shape_inference.infer_shapes(model)
    shapes = {vi.name: _dims(vi) for vi in [*inferred.graph.value_info, *inferred.graph.input,
                                            *inferred.graph.output]}
    out.mkdir(parents=True, exist_ok=True)
    stages = []
    for i in range(n):
        file = out / f"stage{i}.onnx"
        utils.extract_model(str(path), str(file), boundaries[i], boundaries[i + 1], check_model=True)
        stages.append({
            "file": file.name, "inputs": boundaries[i], "outputs": boundaries[i + 1],
            "macs": int(sum(macs[edges[i] + 1:edges[i + 1] + 1])),
            "output_floats": [int(np.prod(shapes[t])) for t in boundaries[i + 1]],
            "output_shapes": [shapes[t] for t in boundaries[i + 1]],
        })
    meta = {"source": path.name, "stages": stages, "total_macs": int(sum(macs))}
    (out / "stages.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    """`python -m vptrain.mpsplit MODEL N OUT`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or not args[1].isdigit():
        print("usage: python -m vptrain.mpsplit MODEL.onnx N OUT_DIR", file=sys.stderr)
        return 2
    try:
        meta = split(Path(args[0]), int(args[1]), Path(args[2]))
    except (OSError, ValueError, onnx.checker.ValidationError) as e:
        print(f"vptrain.mpsplit: {e}", file=sys.stderr)
        return 1
    for s in meta["stages"]:
        print(f"{s['file']}: {s['inputs']} -> {s['outputs']} macs {s['macs']} out floats {s['output_floats']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
