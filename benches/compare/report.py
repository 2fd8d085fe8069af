"""Turns a compare.py results file into markdown tables (stdout) and two PNG plots, drawn with Pillow (already in
the project's Python environment; no plotting library needed):
  latency.png   p50 (bar) and p99 (tick) per atomic input, per scheme and network profile, 1 request in flight
  failures.png  answered-and-correct share (availability x accuracy) against the number of dead devices

    python benches/compare/report.py results.json --png-dir docs/results
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

NAMES = {"vp": "VP (variants)", "mp": "MP (stages)", "cp": "CP (class groups)"}
COLORS = {"vp": (31, 119, 180), "mp": (214, 39, 40), "cp": (44, 160, 44)}


def fmt(v, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}{unit}" if v < 10 else f"{v:,.1f}{unit}"
    return f"{v:,}{unit}"


def tables(res: dict) -> str:
    out = []
    for profile, prof in res["profiles"].items():
        out.append(f"**{profile}** (`{prof['shaping'] or 'no qdisc'}`)\n")
        out.append("| scheme | p50 ms (1 in flight) | p99 ms | req/s (1 in flight) | p50 ms (8 in flight) | p99 ms | "
                   "req/s (8 in flight) | bytes on the wire / request | busiest device link bytes / request | "
                   "packets / request | accuracy (answered) |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for s, c1 in prof["c1"].items():
            c8 = prof["c8"][s]
            out.append(f"| {NAMES[s]} | {fmt(c1['p50_ms'])} | {fmt(c1['p99_ms'])} | {fmt(c1['throughput_rps'])} | "
                       f"{fmt(c8['p50_ms'])} | {fmt(c8['p99_ms'])} | {fmt(c8['throughput_rps'])} | "
                       f"{fmt(c1['bytes_per_request'])} | {fmt(c1['busiest_device_link_bytes_per_request'])} | "
                       f"{fmt(c1['packets_per_request'])} | {fmt(c1['accuracy'])} |")
        out.append("")
    for profile, modes in res["failures"].items():
        for mode, rows in modes.items():
            what = "link cut" if mode == "cut" else "SIGKILL of the device's servers"
            out.append(f"**Failures, {profile}, {what}** (devices d0, d1, ... in turn; availability / accuracy of "
                       f"the answered / expected accuracy of the survivors on the full test set)\n")
            schemes = list(rows)
            out.append("| dead devices | " + " | ".join(NAMES[s] for s in schemes) + " |")
            out.append("|---:|" + "---|" * len(schemes))
            for i in range(len(rows[schemes[0]])):
                cells = []
                for s in schemes:
                    r = rows[s][i]
                    cells.append(f"{fmt(r['availability'])} / {fmt(r['accuracy'])} / "
                                 f"{fmt(r['expected_accuracy_full_test_set'])}")
                out.append(f"| {rows[schemes[0]][i]['dead']} | " + " | ".join(cells) + " |")
            out.append("")
    return "\n".join(out)


def _font():
    return ImageFont.load_default()


def latency_png(res: dict, path: Path) -> None:
    profiles = list(res["profiles"])
    schemes = list(res["profiles"][profiles[0]]["c1"])
    vmax = max((res["profiles"][p]["c1"][s]["p99_ms"] or 0) for p in profiles for s in schemes) or 1.0
    w, h, left, bottom, top = 760, 420, 70, 60, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    f = _font()
    d.text((left, 10), "End-to-end latency per atomic input, 1 in flight: p50 (bar), p99 (tick), ms", fill="black", font=f)
    plot_h = h - bottom - top
    d.line([(left, top), (left, h - bottom), (w - 20, h - bottom)], fill="black")
    for t in range(0, 6):
        y = h - bottom - plot_h * t / 5
        d.line([(left - 4, y), (left, y)], fill="black")
        d.text((5, y - 6), f"{vmax * t / 5:.1f}", fill="black", font=f)
    group_w = (w - 20 - left) / len(profiles)
    bar_w = group_w / (len(schemes) + 1)
    for gi, p in enumerate(profiles):
        x0 = left + gi * group_w + bar_w / 2
        d.text((x0 + bar_w, h - bottom + 8), p, fill="black", font=f)
        for si, s in enumerate(schemes):
            r = res["profiles"][p]["c1"][s]
            x = x0 + si * bar_w
            if r["p50_ms"] is not None:
                y50 = h - bottom - plot_h * r["p50_ms"] / vmax
                d.rectangle([x, y50, x + bar_w * 0.85, h - bottom], fill=COLORS[s])
                d.text((x, y50 - 12), f"{r['p50_ms']:.1f}", fill="black", font=f)
            if r["p99_ms"] is not None:
                y99 = h - bottom - plot_h * r["p99_ms"] / vmax
                d.line([(x, y99), (x + bar_w * 0.85, y99)], fill="black", width=2)
    for si, s in enumerate(schemes):
        d.rectangle([left + si * 200, h - 22, left + si * 200 + 12, h - 10], fill=COLORS[s])
        d.text((left + si * 200 + 18, h - 22), NAMES[s], fill="black", font=f)
    img.save(path)


def failures_png(res: dict, path: Path) -> None:
    panels = [(p, m) for p, modes in res["failures"].items() for m in modes]
    if not panels:
        return
    pw, ph, left, bottom, top = 380, 320, 50, 50, 40
    img = Image.new("RGB", (pw * len(panels), ph + 30), "white")
    d = ImageDraw.Draw(img)
    f = _font()
    for pi, (p, m) in enumerate(panels):
        rows = res["failures"][p][m]
        ox = pi * pw
        n = len(next(iter(rows.values())))
        title = f"{p}: {'link cut' if m == 'cut' else 'SIGKILL'}; availability x accuracy"
        d.text((ox + 10, 10), title, fill="black", font=f)
        plot_w, plot_h = pw - left - 20, ph - bottom - top
        y_of = lambda v: top + plot_h * (1 - v)  # noqa: E731
        x_of = lambda i: ox + left + plot_w * (i / max(1, n - 1))  # noqa: E731
        d.line([(ox + left, top), (ox + left, top + plot_h), (ox + left + plot_w, top + plot_h)], fill="black")
        for t in range(0, 6):
            y = y_of(t / 5)
            d.text((ox + 10, y - 6), f"{t / 5:.1f}", fill="black", font=f)
        for i in range(n):
            d.text((x_of(i) - 3, top + plot_h + 6), str(i), fill="black", font=f)
        d.text((ox + left + plot_w / 2 - 40, top + plot_h + 22), "dead devices", fill="black", font=f)
        for s, rs in rows.items():
            pts = [(x_of(i), y_of((r["availability"] or 0) * (r["accuracy"] or 0))) for i, r in enumerate(rs)]
            d.line(pts, fill=COLORS[s], width=3)
            for x, y in pts:
                d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=COLORS[s])
    for si, s in enumerate(("vp", "mp", "cp")):
        d.rectangle([20 + si * 200, ph + 8, 32 + si * 200, ph + 20], fill=COLORS[s])
        d.text((38 + si * 200, ph + 8), NAMES[s], fill="black", font=f)
    img.save(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--png-dir", type=Path, default=None)
    args = ap.parse_args()
    try:
        res = json.loads(args.results.read_text())
        print(tables(res))
        if args.png_dir is not None:
            args.png_dir.mkdir(parents=True, exist_ok=True)
            latency_png(res, args.png_dir / "compare-latency.png")
            failures_png(res, args.png_dir / "compare-failures.png")
    except (OSError, KeyError, ValueError) as e:
        print(f"report: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
