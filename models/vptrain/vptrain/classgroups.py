"""Class parallelism (CP), the baseline scheme variant parallelism is compared with: N sub-models, each responsible
for one group of classes (the classes split evenly, in order) plus an "other" class; the answer is the most
confident non-"other" class across the sub-models that replied.

Each sub-model ships as ONNX with the family contract (uint8 `image` in, `probs` [N, classes] out): its softmax over
(group + other) is scattered into the dataset's class positions and the "other" probability is left out (it is
1 - the row sum). A server's top-1 of that vector is the sub-model's best non-"other" class, so the project's own
servers can serve a CP sub-model, and the aggregator's soft vote over top-1 replies -- the sum per class of the
replied probabilities -- picks the most confident one, because the groups are disjoint (`combine` below).

    python -m vptrain.classgroups build CONFIG --out DIR --work DIR   # train (resumable), export, evaluate
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from . import combine as vote_rule
from . import config, data, export, manifest, pipeline, train
from .arch import Classifier
from .count import count_macs, count_params

OTHER = "other"


def groups(classes: int, n: int) -> list[list[int]]:
    """The classes 0..classes-1 split into n consecutive groups whose sizes differ by at most one (larger first)."""
    if not 1 <= n <= classes:
        raise ValueError(f"cannot split {classes} classes into {n} groups")
    base, extra = divmod(classes, n)
    out, start = [], 0
    for i in range(n):
        size = base + (1 if i < extra else 0)
        out.append(list(range(start, start + size)))
        start += size
    return out


def relabel(labels: np.ndarray, group: list[int]) -> np.ndarray:
    """Dataset labels -> the sub-model's labels: position in `group`, or len(group) ("other") outside it."""
    lookup = np.full(int(max(labels.max(initial=0), max(group))) + 1, len(group), dtype=np.int64)
    lookup[group] = np.arange(len(group))
    return lookup[labels]


def scatter(probs: np.ndarray, group: list[int], classes: int) -> np.ndarray:
    """[N, len(group) + 1] sub-model probabilities -> [N, classes] with the group's classes in place, "other" left
    out, every other class 0 (what the exported sub-model outputs)."""
    if probs.shape[1] != len(group) + 1:
        raise ValueError(f"expected {len(group) + 1} columns, got {probs.shape[1]}")
    out = np.zeros((probs.shape[0], classes), dtype=np.float32)
    out[:, group] = probs[:, :len(group)]
    return out


def combine(replies: list[tuple[int, float]]) -> int | None:
    """The CP rule for one input: replies are (class, probability) top-1 answers of the sub-models that replied;
    the most confident wins, the lower class on a tie; None when nobody replied."""
    best: tuple[float, int] | None = None
    for cls, prob in replies:
        if best is None or prob > best[0] or (prob == best[0] and cls < best[1]):
            best = (prob, cls)
    return None if best is None else best[1]


def combine_batch(scattered: list[np.ndarray]) -> np.ndarray:
    """`combine` over a batch: each element is one sub-model's scattered output [N, classes]."""
    return vote_rule.vote(scattered, k=1)


class ScatteredExport(torch.nn.Module):
    """What ships: uint8 image -> softmax over (group + other) -> scattered into the dataset's classes."""

    def __init__(self, classifier: Classifier, group: list[int], classes: int) -> None:
        super().__init__()
        self.classifier = classifier
        m = torch.zeros(len(group) + 1, classes)
        for i, c in enumerate(group):
            m[i, c] = 1.0
        self.register_buffer("place", m)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(image), dim=1) @ self.place


def group_dataset(ds: data.Dataset, group: list[int]) -> data.Dataset:
    """The data set as one sub-model sees it: the group's classes, then "other"."""
    return data.Dataset(f"{ds.name}-{'-'.join(map(str, group))}", [ds.classes[c] for c in group] + [OTHER],
                        ds.train_x, relabel(ds.train_y, group), ds.test_x, relabel(ds.test_y, group))


def _export(model: Classifier, group: list[int], classes: int, path: Path, shape: tuple[int, int, int]) -> None:
    import warnings

    import onnx
    wrapper = ScatteredExport(model, group, classes).cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (torch.zeros((2, *shape), dtype=torch.uint8),), str(path), dynamo=False,
                          opset_version=export.OPSET, input_names=[export.INPUT_NAME],
                          output_names=[export.OUTPUT_NAME], do_constant_folding=True,
                          dynamic_axes={export.INPUT_NAME: {0: "N"}, export.OUTPUT_NAME: {0: "N"}})
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    proto.doc_string = f"class-parallel sub-model for classes {group}: uint8 image -> probs [N,{classes}] " \
                       "(other left out)"
    onnx.save(proto, str(path))


def build(cfg_path: Path, out: Path, work: Path, log: Any = print) -> dict[str, Any]:
    """Trains every group's sub-model (resuming from `work`), exports them to `out`, measures accuracy on the full
    test set with ONNX Runtime, and writes out/classgroups.yaml."""
    cfg, ds = pipeline.load_family(cfg_path)
    torch.set_num_threads(max(1, cfg.training.threads))
    n = len(cfg.variants)
    gs = groups(len(ds.classes), n)
    out.mkdir(parents=True, exist_ok=True)
    entries, scattered = [], []
    for spec, group in zip(cfg.variants, gs, strict=True):
        gds = group_dataset(ds, group)
        model = pipeline.build_model(spec, gds, cfg.training.seed)
        t0 = time.monotonic()
        result = train.train([model], gds, cfg.training, work / spec.name, joint=False, log=log)
        path = out / f"{spec.name}.onnx"
        _export(model, group, len(ds.classes), path, ds.shape)
        probs = export.ort_probs(export.session(path), ds.test_x)
        scattered.append(probs)
        in_group = np.isin(ds.test_y, group)
        own = ((probs.sum(1) >= 0.5) == in_group).mean()  # group vs "other" decided right
        entries.append({
            "name": spec.name, "file": path.name, "sha256": manifest.sha256(path), "bytes": path.stat().st_size,
            "classes": group, "resolution": spec.resolution, "width": spec.width, "depth": list(spec.depth),
            "head_channels": spec.head_channels,
            "params": count_params(model.net), "macs": count_macs(spec, ds.shape[0], len(group) + 1),
            "group_vs_other_accuracy": round(float(own), 4),
            "accuracy_inside_group": round(float((probs[in_group].argmax(1) == ds.test_y[in_group]).mean()), 4),
            "train_wall_s": round(time.monotonic() - t0, 1),
            "val_accuracy": (result.val_accuracy if result else {}),
        })
        log(f"{spec.name}: {entries[-1]}")
    rows = []
    for sub in vote_rule.subsets([e["name"] for e in entries]):
        pred = combine_batch([scattered[i] for i in sub])
        rows.append({"groups": [entries[i]["name"] for i in sub],
                     "accuracy": round(vote_rule.accuracy(pred, ds.test_y), 6)})
    meta = {
        "schema": "classgroups/1", "family": cfg.family, "dataset": ds.name, "classes": ds.classes,
        "test_samples": int(len(ds.test_y)), "rule": "most confident non-other class (top-1 soft vote)",
        "training": {k: v for k, v in vars(cfg.training).items()}, "hardware": pipeline.hardware(1),
        "models": entries, "total_params": int(sum(e["params"] for e in entries)),
        "accuracy": rows[-1]["accuracy"], "subsets": rows,
    }
    (out / "classgroups.yaml").write_text(
        "# Generated by `python -m vptrain.classgroups build` (models/vptrain); do not edit.\n"
        + yaml.safe_dump(meta, sort_keys=False, width=120))
    return meta


def ensemble_manifest(meta: dict[str, Any], baseline: dict[str, Any], input_decl: dict[str, Any]) -> dict[str, Any]:
    """An ensemble.yaml (schema v1) that lets the project's servers serve the sub-models: variants = sub-models,
    `baseline` copied from the compared family (it is not served), subsets = CP accuracy of each group subset
    (the same figure for every k: a sub-model's reply is used by its top-1 only)."""
    classes = meta["classes"]
    keep = ("name", "file", "sha256", "bytes", "resolution", "width", "depth", "head_channels", "params", "macs")
    variants = [{**{k: e[k] for k in keep}, "accuracy": e["accuracy_inside_group"]} for e in meta["models"]]
    return {
        "schema_version": 1, "family": f"{meta['family']}", "dataset": {
            "name": meta["dataset"], "classes": classes, "test_samples": meta["test_samples"]},
        "input": input_decl, "output": {"name": export.OUTPUT_NAME, "dtype": "float32", "classes": len(classes)},
        "variants": variants, "baseline": {k: baseline[k] for k in (*keep, "accuracy") if k in baseline},
        "subsets": [{"variants": r["groups"], "accuracy": r["accuracy"],
                     "topk_accuracy": [r["accuracy"]] * (len(classes) // 2)} for r in meta["subsets"]],
        "topk": [{"k": k, "accuracy": meta["accuracy"]} for k in range(1, len(classes) // 2 + 1)],
        "training": meta["training"],
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m vptrain.classgroups {build,manifest}`."""
    ap = argparse.ArgumentParser(prog="vptrain.classgroups", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train, export and evaluate the class-group sub-models")
    b.add_argument("config", type=Path)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--work", type=Path, required=True)
    m = sub.add_parser("manifest", help="write an ensemble.yaml serving the sub-models (JSON to stdout)")
    m.add_argument("classgroups", type=Path, help="classgroups.yaml")
    m.add_argument("--family", type=Path, required=True, help="the compared family's ensemble.yaml (baseline)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "build":
            meta = build(args.config, args.out, args.work, log=lambda s: print(s, flush=True))
            print(f"CP accuracy (all groups): {meta['accuracy']}, total params {meta['total_params']}")
        else:
            meta = yaml.safe_load(args.classgroups.read_text())
            fam = manifest.read(args.family)
            print(json.dumps(ensemble_manifest(meta, fam["baseline"], fam["input"]), indent=1))
    except (config.ConfigError, data.DataError, OSError, ValueError, KeyError) as e:
        print(f"vptrain.classgroups: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
