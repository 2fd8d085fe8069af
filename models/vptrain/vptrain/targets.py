"""A family's targets (the config's `targets`), measured from its manifest's own tables.

The same function fills the manifest's `targets` block when a family is built and re-checks a shipped manifest in
the tests, so a family can only claim a target its numbers meet. Accuracy targets use the manifest's vote (with
its vote weights): the full ensemble is the last subset row, the best single variant the best one-variant row.
"""

from __future__ import annotations

from typing import Any

KNOWN = ("min_param_ratio", "min_mac_ratio", "smallest_min_mac_ratio", "min_gain_over_best_single_points",
         "ensemble_at_least_baseline", "one_missing_at_least_best_single", "max_drop_one_missing_points",
         "max_top3_gap_points")


class TargetError(ValueError):
    """A config names a target this toolchain does not know."""


def _pp(x: float) -> float:
    """A fraction as percentage points, rounded for the manifest."""
    return round(100 * x, 2)


def evaluate(targets: dict[str, Any], man: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The targets block: for each configured target its threshold, the measured value(s) and `met`."""
    unknown = set(targets) - set(KNOWN)
    if unknown:
        raise TargetError(f"unknown targets {sorted(unknown)} (known: {list(KNOWN)})")
    base = man["baseline"]
    var = man["variants"]
    prm = [round(base["params"] / v["params"], 2) for v in var]
    mac = [round(base["macs"] / v["macs"], 2) for v in var]
    n = len(var)
    rows = man["subsets"]
    full = rows[-1]["accuracy"]
    best = max(r["accuracy"] for r in rows if len(r["variants"]) == 1)
    missing = [r for r in rows if len(r["variants"]) == n - 1] if n > 1 else []
    worst_missing = min((r["accuracy"] for r in missing), default=full)
    top3 = next((r["accuracy"] for r in man["topk"] if r["k"] == 3), None)
    out: dict[str, dict[str, Any]] = {}
    for key in KNOWN:
        if key not in targets:
            continue
        t = targets[key]
        if key == "min_param_ratio":
            out["param_ratio"] = {"target": t, "worst": min(prm), "met": min(prm) >= t}
        elif key == "min_mac_ratio":
            out["mac_ratio"] = {"target": t, "worst": min(mac), "met": min(mac) >= t}
        elif key == "smallest_min_mac_ratio":
            out["smallest_mac_ratio"] = {"target": t, "best": max(mac), "met": max(mac) >= t}
        elif key == "min_gain_over_best_single_points":
            gain = _pp(full - best)
            out["gain_over_best_single_points"] = {"target": t, "ensemble": full, "best_single": best,
                                                   "gain": gain, "met": gain >= t}
        elif key == "ensemble_at_least_baseline" and t:
            out["ensemble_vs_baseline"] = {"ensemble": full, "baseline": base["accuracy"],
                                           "met": full >= base["accuracy"]}
        elif key == "one_missing_at_least_best_single" and t:
            out["one_missing_vs_best_single"] = {"worst_one_missing": worst_missing, "best_single": best,
                                                 "met": worst_missing >= best}
        elif key == "max_drop_one_missing_points":
            drop = _pp(full - worst_missing)
            out["one_missing_max_drop_points"] = {"target": t, "worst": drop, "met": drop <= t}
        elif key == "max_top3_gap_points":
            gap = None if top3 is None else _pp(abs(full - top3))
            out["top3_vs_full_points"] = {"target": t, "diff": gap, "met": gap is not None and gap <= t}
    return out
