"""Vote ablations of a built family, from the ONNX Runtime probabilities its build saved in the work folder
(`val_probs.npz`, `test_probs.npz`): uniform vs fitted vote weights, weights from validation accuracy, per-variant
temperature (fitted on validation), and leaving each variant out. Every choice is made on the validation split;
the test column only reports. `python -m vptrain ablate WORK_DIR` prints a markdown table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import combine


def _load(path: Path) -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
    z = np.load(path)
    names = [k for k in z.files if k != "labels"]
    return names, {k: z[k] for k in names}, z["labels"]


def temperature(p: np.ndarray, t: float) -> np.ndarray:
    """Softmax(log p / t): the probabilities of logits divided by t (float32, as a model would output)."""
    z = np.log(np.maximum(p.astype(np.float64), 1e-30)) / t
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def fit_temperature(p: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in 0.5..3 (step 0.05) with the lowest validation log loss."""
    grid = np.round(np.arange(0.5, 3.0001, 0.05), 2)
    nll = [-np.log(np.maximum(temperature(p, t)[np.arange(len(labels)), labels], 1e-30)).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])


def table(work: Path, baseline: str = "baseline") -> str:
    """The ablation rows as markdown."""
    names, val, vy = _load(work / "val_probs.npz")
    _, test, ty = _load(work / "test_probs.npz")
    var = [n for n in names if n != baseline]
    pv, pt = [val[n] for n in var], [test[n] for n in var]

    def row(label: str, v: list[np.ndarray], t: list[np.ndarray], w: list[float] | None) -> str:
        a = combine.accuracy(combine.vote(v, weights=w), vy)
        b = combine.accuracy(combine.vote(t, weights=w), ty)
        ws = "uniform" if w is None else ", ".join(f"{x:g}" for x in w)
        return f"| {label} | {ws} | {100 * a:.2f} | {100 * b:.2f} |"

    lines = ["| vote | weights (family order) | validation % | test % |", "|---|---|---|---|"]
    lines.append(row("soft vote, uniform", pv, pt, None))
    fitted = combine.fit_weights(pv, vy)
    lines.append(row("soft vote, weights fitted on validation (log loss)", pv, pt, fitted))
    acc_w = [round(combine.accuracy(p.argmax(1), vy), 4) for p in pv]
    lines.append(row("soft vote, weights = validation accuracy", pv, pt, acc_w))
    temps = [fit_temperature(p, vy) for p in pv]
    tv, tt = [temperature(p, t) for p, t in zip(pv, temps, strict=True)], [
        temperature(p, t) for p, t in zip(pt, temps, strict=True)]
    lines.append(row(f"per-variant temperature ({', '.join(f'{t:g}' for t in temps)}), uniform", tv, tt, None))
    lines.append(row("per-variant temperature + fitted weights", tv, tt, combine.fit_weights(tv, vy)))
    for i, n in enumerate(var):
        rest = [j for j in range(len(var)) if j != i]
        lines.append(row(f"without {n}, fitted weights", [pv[j] for j in rest], [pt[j] for j in rest],
                         [fitted[j] for j in rest]))
    if baseline in val:
        lines.append(f"| baseline alone | - | {100 * combine.accuracy(val[baseline].argmax(1), vy):.2f} | "
                     f"{100 * combine.accuracy(test[baseline].argmax(1), ty):.2f} |")
    return "\n".join(lines) + "\n"
