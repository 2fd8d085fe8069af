"""PNG plots of a family, written next to its manifest (drawn with Pillow, no plotting library needed):

- `curves.png`: validation accuracy after each epoch of every variant, the ensemble's vote and the baseline;
- `degradation.png`: test accuracy of the vote against the number of surviving variants (worst, mean and best
  subset of each size), with the best single variant and the baseline for reference.
"""

from __future__ import annotations

from itertools import cycle
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

W, H = 900, 540
LEFT, RIGHT, TOP, BOTTOM = 80, 220, 50, 60
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


class Chart:
    """A line chart with a y range in percent, an x range, axes, grid, legend and title."""

    def __init__(self, title: str, xlabel: str, ylabel: str, x: tuple[float, float], y: tuple[float, float]) -> None:
        self.img = Image.new("RGB", (W, H), "white")
        self.d = ImageDraw.Draw(self.img)
        self.x, self.y = x, y
        self.font, self.small = _font(16), _font(13)
        self.legend: list[tuple[str, str, bool]] = []
        self.d.text((LEFT, 8), title, fill="black", font=self.font)
        self.d.text((LEFT + (W - LEFT - RIGHT) // 2 - 60, H - 30), xlabel, fill="black", font=self.small)
        self.d.text((10, TOP - 18), ylabel, fill="black", font=self.small)

    def px(self, x: float, y: float) -> tuple[float, float]:
        """Data -> pixel coordinates."""
        fx = (x - self.x[0]) / max(self.x[1] - self.x[0], 1e-9)
        fy = (y - self.y[0]) / max(self.y[1] - self.y[0], 1e-9)
        return LEFT + fx * (W - LEFT - RIGHT), H - BOTTOM - fy * (H - TOP - BOTTOM)

    def axes(self, xticks: list[float], ystep: float) -> None:
        """Frame, grid lines and tick labels."""
        x0, y0 = self.px(self.x[0], self.y[0])
        x1, y1 = self.px(self.x[1], self.y[1])
        v = self.y[0]
        while v <= self.y[1] + 1e-9:
            _, py = self.px(self.x[0], v)
            self.d.line([(x0, py), (x1, py)], fill="#e0e0e0")
            self.d.text((x0 - 50, py - 8), f"{v:.1f}", fill="black", font=self.small)
            v += ystep
        for t in xticks:
            px, _ = self.px(t, self.y[0])
            self.d.line([(px, y0), (px, y0 + 5)], fill="black")
            self.d.text((px - 6, y0 + 8), f"{t:g}", fill="black", font=self.small)
        self.d.rectangle([x0, y1, x1, y0], outline="black")

    def line(self, pts: list[tuple[float, float]], colour: str, label: str, width: int = 2,
             dashed: bool = False) -> None:
        """A polyline with point markers (dashed: a horizontal reference, no markers)."""
        xy = [self.px(x, y) for x, y in pts]
        if dashed:
            (ax, ay), (bx, _) = xy[0], xy[-1]
            step = 12
            for s in range(int(ax), int(bx), step):
                self.d.line([(s, ay), (min(s + step / 2, bx), ay)], fill=colour, width=width)
        else:
            self.d.line(xy, fill=colour, width=width)
            r = 3 if width < 5 else width  # a wide single point is drawn as a big marker
            for px, py in xy:
                self.d.ellipse([px - r, py - r, px + r, py + r], fill=colour)
        self.legend.append((label, colour, dashed))

    def save(self, path: Path) -> None:
        """Draws the legend and writes the PNG."""
        lx, ly = W - RIGHT + 15, TOP
        for label, colour, dashed in self.legend:
            self.d.line([(lx, ly + 8), (lx + 25, ly + 8)], fill=colour, width=1 if dashed else 3)
            self.d.text((lx + 32, ly), label, fill="black", font=self.small)
            ly += 22
        self.img.save(path, format="PNG", optimize=True)


def _range(values: list[float], pad: float = 0.5) -> tuple[float, float]:
    lo, hi = min(values) - pad, max(values) + pad
    return float(int(lo)), float(int(hi) + 1)


def curves(man: dict[str, Any], path: Path) -> None:
    """Validation accuracy per epoch: every variant, the ensemble (uniform soft vote), the baseline."""
    run = man["training"]["variants_run"]["history"]
    own = {n: r["history"] for n, r in (man["training"].get("own_runs") or {}).items()}
    base = man["training"]["baseline_run"]["history"]
    names = [v["name"] for v in man["variants"]]
    series = {n: [(h["epoch"], 100 * h[n]) for h in own.get(n, run) if n in h] for n in names}
    vote = "ensemble (vote)" if not own else f"vote of the first {len(names) - len(own)}"
    series[vote] = [(h["epoch"], 100 * h["ensemble"]) for h in run if "ensemble" in h]
    if own:  # the whole family's vote exists only for the final models (validation split, the manifest's weights)
        last_epoch = max(x for pts in series.values() for x, _ in pts)
        series["family vote (final)"] = [(last_epoch, 100 * man["vote"]["validation_accuracy"]["shipped"])]
    series["baseline"] = [(h["epoch"], 100 * h[man["baseline"]["name"]]) for h in base]
    allv = [y for pts in series.values() for _, y in pts]
    last = max(x for pts in series.values() for x, _ in pts)
    lo = max(min(allv), sorted(allv)[len(allv) // 4] - 4)  # keep the late epochs readable
    c = Chart(f"{man['family']}: validation accuracy per epoch", "epoch", "accuracy %", (0.5, last + 0.5),
              _range([lo, max(allv)]))
    c.axes([float(e) for e in range(1, int(last) + 1)], 1.0 if max(allv) - lo < 12 else 2.0)
    colours = cycle(COLOURS)
    for name, pts in series.items():
        pts = [(x, max(y, c.y[0])) for x, y in pts]
        if name == vote:
            c.line(pts, "black", name, width=4)
        elif name == "family vote (final)":
            c.line(pts, "#555555", name, width=7)
        elif name == "baseline":
            c.line(pts, "#d62728", name, width=3)
        else:
            c.line(pts, next(colours), name)
    c.save(path)


def degradation(man: dict[str, Any], path: Path) -> None:
    """Test accuracy of the (manifest's) vote against the number of answering variants."""
    n = len(man["variants"])
    by_size: dict[int, list[float]] = {}
    for r in man["subsets"]:
        by_size.setdefault(len(r["variants"]), []).append(100 * r["accuracy"])
    sizes = list(range(1, n + 1))
    worst = [(s, min(by_size[s])) for s in sizes]
    mean = [(s, sum(by_size[s]) / len(by_size[s])) for s in sizes]
    best = [(s, max(by_size[s])) for s in sizes]
    base = 100 * man["baseline"]["accuracy"]
    top_single = max(by_size[1])
    allv = [y for _, y in worst + best] + [base]
    c = Chart(f"{man['family']}: test accuracy vs surviving variants", "variants answering", "accuracy %",
              (0.7, n + 0.3), _range(allv, 0.3))
    c.axes([float(s) for s in sizes], 0.5 if max(allv) - min(allv) < 6 else 1.0)
    c.line(best, COLOURS[2], "best subset")
    c.line(mean, "black", "mean over subsets", width=3)
    c.line(worst, COLOURS[1], "worst subset")
    c.line([(0.7, base), (n + 0.3, base)], "#d62728", f"baseline {base:.2f}", dashed=True)
    c.line([(0.7, top_single), (n + 0.3, top_single)], COLOURS[0], f"best single {top_single:.2f}", dashed=True)
    c.save(path)


def write_all(man: dict[str, Any], out_dir: Path) -> list[str]:
    """Writes both plots into out_dir; returns their file names."""
    curves(man, out_dir / "curves.png")
    degradation(man, out_dir / "degradation.png")
    return ["curves.png", "degradation.png"]
