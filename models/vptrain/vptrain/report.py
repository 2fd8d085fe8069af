"""Markdown tables of a family's manifest (the results section of docs/models.md is pasted from this)."""

from __future__ import annotations

from typing import Any


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def markdown(man: dict[str, Any]) -> str:
    """Per-model table, target checks, top-k table and the subset table of one manifest."""
    base = man["baseline"]
    lines = [f"Family `{man['family']}` on `{man['dataset']['name']}` "
             f"(test split: {man['dataset']['test_samples']} samples; accuracies from ONNX Runtime).", "",
             "| model | width | res | depth | head | params | MACs | params x fewer | MACs x fewer | top-1 % | ONNX bytes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in [*man["variants"], base]:
        lines.append(f"| {m['name']} | {m['width']} | {m['resolution']} | {m['depth']} | {m['head_channels']} | "
                     f"{m['params']:,} | {m['macs']:,} | {base['params'] / m['params']:.2f} | "
                     f"{base['macs'] / m['macs']:.2f} | {_pct(m['accuracy'])} | {m['bytes']:,} |")
    full = man["subsets"][-1]
    weights = [v.get("vote_weight", 1.0) for v in man["variants"]]
    rule = "soft vote" if all(w == 1.0 for w in weights) else \
        f"weighted soft vote, weights {', '.join(f'{w:g}' for w in weights)}"
    lines += ["", f"Full ensemble ({rule} of all {len(man['variants'])} variants): **{_pct(full['accuracy'])} %**, "
              f"baseline: **{_pct(base['accuracy'])} %**.", "", "| k (top-k replies) | ensemble top-1 % |", "|---|---|"]
    lines += [f"| {r['k']} | {_pct(r['accuracy'])} |" for r in man["topk"]]
    lines += [f"| all ({man['output']['classes']}) | {_pct(full['accuracy'])} |"]
    if "targets" in man:
        lines += ["", "| target | claimed | measured | met |", "|---|---|---|---|"]
        for block, claimed in (("targets", "yes"), ("open_targets", "no")):
            for name, t in man.get(block, {}).items():
                measured = ", ".join(f"{k} {v}" for k, v in t.items() if k != "met")
                lines.append(f"| {name} | {claimed} | {measured} | {'yes' if t['met'] else '**no**'} |")
    half = len(full["topk_accuracy"])
    lines += ["", "Every subset of variants (the expected accuracy under any pattern of failed nodes):", "",
              "| answering variants | full vote % | " + " | ".join(f"top-{k} %" for k in range(1, half + 1)) + " |",
              "|---|---|" + "---|" * half]
    for r in man["subsets"]:
        lines.append(f"| {', '.join(r['variants'])} | {_pct(r['accuracy'])} | "
                     + " | ".join(_pct(a) for a in r["topk_accuracy"]) + " |")
    return "\n".join(lines) + "\n"
