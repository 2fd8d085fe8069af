"""The whole regeneration of a family: check sizes -> train variants jointly -> train baseline -> export ->
evaluate with ONNX Runtime -> manifest. Every step resumes from the work folder."""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime as ort
import torch
import yaml

from . import combine, config, data, export, manifest, train
from .arch import ArchSpec, Classifier
from .count import count_spec

Log = Callable[[str], None]


def load_family(path: Path) -> tuple[config.FamilyConfig, data.Dataset]:
    """Reads a family config and the data set it names."""
    raw = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict) or "dataset" not in raw or "name" not in raw.get("dataset", {}):
        raise config.ConfigError(f"{path}: needs dataset.name")
    ds = data.load(str(raw["dataset"]["name"]))
    return config.parse(raw, native_resolution=ds.shape[1]), ds


def size_table(cfg: config.FamilyConfig, ds: data.Dataset) -> dict[str, dict[str, Any]]:
    """Params, MACs and their ratios to the baseline for every model; target checks."""
    c, classes = ds.shape[0], len(ds.classes)
    rows = {s.name: dict(zip(("params", "macs"), count_spec(s, c, classes), strict=True)) for s in cfg.all_specs}
    base = rows[cfg.baseline.name]
    for name, r in rows.items():
        r["param_ratio"] = round(base["params"] / r["params"], 2)
        r["mac_ratio"] = round(base["macs"] / r["macs"], 2)
    return rows


def size_targets(cfg: config.FamilyConfig, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The size targets (from the config's `targets`) and whether they hold."""
    t = cfg.targets
    var = [rows[s.name] for s in cfg.variants]
    out: dict[str, Any] = {}
    if "min_param_ratio" in t:
        worst = min(r["param_ratio"] for r in var)
        out["param_ratio"] = {"target": t["min_param_ratio"], "worst": worst, "met": worst >= t["min_param_ratio"]}
    if "min_mac_ratio" in t:
        worst = min(r["mac_ratio"] for r in var)
        out["mac_ratio"] = {"target": t["min_mac_ratio"], "worst": worst, "met": worst >= t["min_mac_ratio"]}
    if "smallest_min_mac_ratio" in t:
        best = max(r["mac_ratio"] for r in var)
        out["smallest_mac_ratio"] = {"target": t["smallest_min_mac_ratio"], "best": best,
                                     "met": best >= t["smallest_min_mac_ratio"]}
    return out


def build_model(spec: ArchSpec, ds: data.Dataset, seed: int) -> Classifier:
    """A freshly initialised (seeded) classifier for the data set."""
    torch.manual_seed(seed)
    c, h, _ = ds.shape
    return Classifier(spec, c, h, len(ds.classes), ds.mean, ds.std)


def hardware(threads: int) -> str:
    """What the run ran on, in words."""
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {model}, {os.cpu_count()} logical cores, torch threads {threads} (machine shared with other jobs)"


BASELINE_IGNORES = ("distill_weight", "distill_temperature", "ensemble_weight", "note")


def _claim_work_dir(work_dir: Path, cfg: config.FamilyConfig, part: str) -> None:
    """Refuses to resume checkpoints that were made for a different config (of what that part depends on)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    if part == "baseline":
        training = {k: v for k, v in dict(cfg.raw.get("training") or {}).items() if k not in BASELINE_IGNORES}
        key = json.dumps({"dataset": cfg.raw.get("dataset"), "architecture": cfg.raw.get("architecture"),
                          "baseline": cfg.raw.get("baseline"), "training": training}, sort_keys=True)
    else:
        key = json.dumps({k: cfg.raw.get(k) for k in ("dataset", "architecture", "baseline", "variants", "training")},
                         sort_keys=True)
    stamp = work_dir / f"config-{part}.json"
    if stamp.exists() and stamp.read_text() != key:
        raise RuntimeError(f"{work_dir} holds checkpoints of a different config; delete it to start afresh")
    stamp.write_text(key)


def with_threads(cfg: config.FamilyConfig, threads: int | None) -> config.FamilyConfig:
    """The config with its CPU thread count overridden (None: unchanged)."""
    if threads is None:
        return cfg
    return replace(cfg, training=replace(cfg.training, threads=threads))


def train_part(cfg: config.FamilyConfig, ds: data.Dataset, work_dir: Path, part: str,
               log: Log) -> tuple[list[Classifier], train.TrainResult]:
    """Trains (or loads, when finished) the jointly trained variants or the baseline; part: variants|baseline."""
    if part not in ("variants", "baseline"):
        raise ValueError(f"part must be variants or baseline, got {part!r}")
    _claim_work_dir(work_dir, cfg, part)
    tc = cfg.training
    teacher = None
    if part == "variants":
        models = [build_model(s, ds, tc.seed + i) for i, s in enumerate(cfg.variants)]
        if tc.distill_weight > 0 and not (work_dir / part / "final.pt").exists():
            teacher = _teacher_logits(cfg, ds, work_dir, log)
    else:
        models = [build_model(cfg.baseline, ds, tc.seed + 100)]
    result = train.train(models, ds, tc, work_dir / part, joint=part == "variants", log=log,
                         teacher_logits=teacher)
    if result is None:  # only happens with stop_after, which is not used here
        raise RuntimeError(f"{part} training stopped early; rerun to resume")
    return models, result


def _teacher_logits(cfg: config.FamilyConfig, ds: data.Dataset, work_dir: Path, log: Log) -> np.ndarray:
    """Logits of the trained baseline on every (un-augmented) training image, cached in the work folder."""
    cache = work_dir / "teacher_logits.npy"
    if cache.exists():
        return np.load(cache)
    if not (work_dir / "baseline" / "final.pt").exists():
        raise RuntimeError("distillation needs the trained baseline first: train --part baseline")
    (teacher,), _ = train_part(cfg, ds, work_dir, "baseline", log)
    device = train.pick_device()
    teacher.to(device).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(ds.train_x), cfg.training.eval_batch):
            out.append(teacher(torch.from_numpy(ds.train_x[i:i + cfg.training.eval_batch]).to(device)).cpu().numpy())
    logits = np.concatenate(out).astype(np.float32)
    np.save(cache, logits)
    log(f"teacher logits for {len(logits)} training images written to {cache}")
    return logits


def build(config_path: Path, out_dir: Path, work_dir: Path, threads: int | None = None,
          log: Log = print) -> dict[str, Any]:
    """Regenerates a family into out_dir (ONNX files, ensemble.yaml, family.yaml); returns the manifest."""
    cfg, ds = load_family(config_path)
    cfg = with_threads(cfg, threads)
    tc = cfg.training
    sizes = size_table(cfg, ds)
    for name, r in sizes.items():
        log(f"{name}: params {r['params']} ({r['param_ratio']}x fewer) macs {r['macs']} ({r['mac_ratio']}x fewer)")
    started = time.time()

    variants, res_var = train_part(cfg, ds, work_dir, "variants", log)
    (baseline,), res_base = train_part(cfg, ds, work_dir, "baseline", log)
    for m in (*variants, baseline):
        m.cpu().eval()
        m.to(memory_format=torch.contiguous_format)

    out_dir.mkdir(parents=True, exist_ok=True)
    keep = {f"{m.spec.name}.onnx" for m in (*variants, baseline)}
    for stale in out_dir.glob("*.onnx"):
        if stale.name not in keep:
            log(f"removing {stale} (not a model of this family)")
            stale.unlink()
    rng = np.random.default_rng(tc.seed)
    random_imgs = rng.integers(0, 256, size=(16, *ds.shape), dtype=np.uint8)
    real_imgs = ds.test_x[:256]
    models = [*variants, baseline]
    entries, probs, parity = [], [], {}
    for m in models:
        path = out_dir / f"{m.spec.name}.onnx"
        export.export(m, path, ds.shape)
        parity[m.spec.name] = {"random": export.parity(m, path, random_imgs), "real": export.parity(m, path, real_imgs)}
        p = export.ort_probs(export.session(path, tc.threads), ds.test_x, tc.eval_batch)
        probs.append(p)
        acc = combine.accuracy(p.argmax(1), ds.test_y)
        log(f"{m.spec.name}: test accuracy {acc:.4f} (ONNX Runtime), parity {parity[m.spec.name]}")
        entries.append({
            "name": m.spec.name, "file": path.name, "sha256": manifest.sha256(path), "bytes": path.stat().st_size,
            "resolution": m.spec.resolution, "width": float(m.spec.width), "depth": list(m.spec.depth),
            "head_channels": m.spec.head_channels, "params": sizes[m.spec.name]["params"],
            "macs": sizes[m.spec.name]["macs"], "accuracy": round(acc, 6),
            "stem_stride": m.spec.stem_stride, "strides": list(m.spec.strides),
            "param_ratio": sizes[m.spec.name]["param_ratio"], "mac_ratio": sizes[m.spec.name]["mac_ratio"],
            "ort_max_abs_diff": {k: float(f"{v:.3g}") for k, v in parity[m.spec.name].items()},
        })
    work_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(work_dir / "test_probs.npz", labels=ds.test_y,
                        **{m.spec.name: p for m, p in zip(models, probs, strict=True)})

    names = [s.name for s in cfg.variants]
    var_probs = probs[:len(names)]
    subsets = combine.subset_table(names, var_probs, ds.test_y)
    half = len(ds.classes) // 2
    topk = [{"k": k, "accuracy": round(combine.accuracy(combine.vote(var_probs, k), ds.test_y), 6)}
            for k in range(1, half + 1)]
    full = subsets[-1]["accuracy"]
    base_acc = entries[-1]["accuracy"]
    worst_drop = max((full - r["accuracy"] for r in subsets if len(r["variants"]) == len(names) - 1), default=0.0)
    top3 = topk[2]["accuracy"] if half >= 3 else None
    targets = size_targets(cfg, sizes)
    targets["ensemble_vs_baseline"] = {"ensemble": full, "baseline": base_acc, "met": full >= base_acc}
    targets["one_missing_max_drop_points"] = {"target": 1.5, "worst": round(100 * worst_drop, 2),
                                              "met": 100 * worst_drop <= 1.5}
    if top3 is not None:
        targets["top3_vs_full_points"] = {"target": 0.3, "diff": round(100 * (full - top3), 2),
                                          "met": abs(100 * (full - top3)) <= 0.3}

    cfg_copy = out_dir / "family.yaml"
    if Path(config_path).resolve() != cfg_copy.resolve():
        shutil.copyfile(config_path, cfg_copy)
    man: dict[str, Any] = {
        "schema_version": manifest.SCHEMA_VERSION,
        "family": cfg.family,
        "dataset": {"name": ds.name, "classes": list(ds.classes), "test_samples": int(len(ds.test_y)),
                    "train_samples": res_var.train_samples, "validation_samples": res_var.val_samples},
        "input": {"name": export.INPUT_NAME, "dtype": "uint8", "layout": "NCHW", "shape": list(ds.shape)},
        "output": {"name": export.OUTPUT_NAME, "dtype": "float32", "classes": len(ds.classes)},
        "variants": entries[:-1],
        "baseline": entries[-1],
        "subsets": subsets,
        "topk": topk,
        "targets": targets,
        "training": {
            "config": json.loads(json.dumps(cfg.raw)),
            "note": tc.note,
            "wall_time_s": round(res_var.wall_time_s + res_base.wall_time_s, 1),
            "variants_run": res_var.__dict__,
            "baseline_run": res_base.__dict__,
            "hardware": hardware(tc.threads),
            "seed": tc.seed,
            "software": {"torch": str(torch.__version__), "onnxruntime": str(ort.__version__),
                         "onnx_opset": export.OPSET, "exporter": "torch.onnx.export(dynamo=False)"},
            "macs_counter": "torch.utils.flop_counter.FlopCounterMode FLOPs / 2 (conv + linear; one input)",
            "pipeline_wall_time_s": round(time.time() - started, 1),
        },
    }
    manifest.write(man, out_dir / "ensemble.yaml")
    errors = manifest.validate(manifest.read(out_dir / "ensemble.yaml"), out_dir)
    if errors:
        raise RuntimeError(f"generated manifest is invalid: {errors}")
    log(f"wrote {out_dir / 'ensemble.yaml'}: full ensemble {full:.4f}, baseline {base_acc:.4f}")
    return man
