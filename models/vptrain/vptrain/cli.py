"""Command line: `python -m vptrain {sizes,build,train,validate,report,ablate,testset} ...`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import manifest, pipeline, report


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(prog="vptrain", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sizes", help="print params/MACs of a family config and check the size targets")
    s.add_argument("config", type=Path)
    b = sub.add_parser("build", help="train, export, evaluate and write the manifest (resumes from --work)")
    b.add_argument("config", type=Path)
    b.add_argument("--out", type=Path, required=True, help="folder for the ONNX files and ensemble.yaml")
    b.add_argument("--work", type=Path, required=True, help="folder for checkpoints and logs")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the config's)")
    b.add_argument("--baseline-from", type=Path, default=None,
                   help="reuse the baseline of this earlier ensemble.yaml (refused unless its recipe is identical)")
    t = sub.add_parser("train", help="train one part (variants or baseline) of a family; resumes from --work")
    t.add_argument("config", type=Path)
    t.add_argument("--part", choices=["variants", "baseline"], required=True)
    t.add_argument("--work", type=Path, required=True, help="folder for checkpoints and logs")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the config's)")
    t.add_argument("--members", default=None,
                   help="comma-separated variants to train in this process (member_batches: independent only)")
    v = sub.add_parser("validate", help="check an ensemble.yaml against schema v1 and its files")
    v.add_argument("manifest", type=Path)
    r = sub.add_parser("report", help="print a manifest's results as markdown tables")
    r.add_argument("manifest", type=Path)
    a = sub.add_parser("ablate", help="vote ablations (weights, temperature, leave-one-out) of a built family")
    a.add_argument("work", type=Path, help="the family's work folder (holds val_probs.npz and test_probs.npz)")
    ts = sub.add_parser("testset", help="write a family's test split as IDX files (what vpctl verify/eval read)")
    ts.add_argument("config", type=Path)
    ts.add_argument("out", type=Path, help="folder for t10k-images-idx{3,4}-ubyte.gz and t10k-labels-idx1-ubyte.gz")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.cmd == "sizes":
        cfg, ds = pipeline.load_family(args.config)
        rows = pipeline.size_table(cfg, ds)
        for name, r in rows.items():
            print(f"{name:>12} params {r['params']:>9} ({r['param_ratio']:>6}x)  macs {r['macs']:>10} "
                  f"({r['mac_ratio']:>6}x)")
        checks = pipeline.size_targets(cfg, rows)
        print(checks)
        return 0 if all(c["met"] for c in checks.values()) else 1
    if args.cmd == "train":
        cfg, ds = pipeline.load_family(args.config)
        members = None if args.members is None else [m for m in args.members.split(",") if m]
        cfg = pipeline.with_threads(cfg, args.threads)
        if args.part == "baseline" or cfg.group:
            pipeline.train_part(cfg, ds, args.work, args.part, log, members)
        if args.part == "variants" and members is None:
            pipeline.train_own(cfg, ds, args.work, log)
        return 0
    if args.cmd == "testset":
        from . import data

        _, ds = pipeline.load_family(args.config)
        files = data.write_idx_test_split(ds, args.out)
        print(f"{len(ds.test_y)} test samples of {ds.name} ({'x'.join(map(str, ds.shape))}) written to "
              f"{', '.join(str(args.out / f) for f in files)}")
        return 0
    if args.cmd == "ablate":
        from . import ablate

        print(ablate.table(args.work), end="")
        return 0
    if args.cmd == "report":
        print(report.markdown(manifest.read(args.manifest)), end="")
        return 0
    if args.cmd == "build":
        pipeline.build(args.config, args.out, args.work, args.threads, log, args.baseline_from)
        return 0
    errors = manifest.validate(manifest.read(args.manifest), args.manifest.parent)
    for e in errors:
        print(e, file=sys.stderr)
    print("valid" if not errors else f"{len(errors)} error(s)")
    return 0 if not errors else 1
