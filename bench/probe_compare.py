"""Compare the classifier records of runs on the same cached features (``featbench run`` outputs):
the torch probe, the old scikit-learn setting, and scikit-learn run to convergence.

``python -m featbench.probe_compare NEW_RUN OLD_RUN REF_RUN`` prints one Markdown row per record
(matched on task, trial, extractor, layer, method, classifier): chosen C and top-1 of each, the
fit seconds, then the summary the issue asks for: how many new fits converged, whether the
agreement bar is met (chosen C equal to the reference on at least 90 % of records, top-1 within
0.5 point on every record), chosen C equal to the reference on what share of records, the largest |top-1 difference| to the reference (points), and the fit_s sums and
their ratio old / new. fit_s is wall time: compare runs made under the same load.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

KEY = ("task", "trial", "extractor", "layer", "method", "classifier")
#: the agreement the torch solver must show with scikit-learn run to convergence (issue 16)
AGREE_SAME_C, AGREE_TOP1_POINTS = 0.9, 0.5


def load(run_dir: Path) -> dict[tuple, dict]:
    rows = [json.loads(line) for line in (Path(run_dir) / "results.jsonl").read_text().splitlines() if line.strip()]
    return {tuple(r[k] for k in KEY): r for r in rows}


def compare(new_dir: Path, old_dir: Path, ref_dir: Path) -> str:
    new, old, ref = load(new_dir), load(old_dir), load(ref_dir)
    keys = [k for k in new if k in old and k in ref]
    if not keys:
        return "no records in common"
    lines = ["| task | extractor@layer | method | clf | n_train | dim | C new/old/ref | top-1 new/old/ref (%) "
             "| fit_s new/old/ref | n_iter new | converged new |", "|" + "---|" * 11]
    for k in keys:
        a, b, c = new[k], old[k], ref[k]
        layer = f"{k[2]}@{k[3]}" if k[3] else k[2]
        lines.append(f"| {k[0]} | {layer} | {k[4]} | {k[5]} | {a['n_train']} | {a['dim']} "
                     f"| {a['C']:g} / {b['C']:g} / {c['C']:g} "
                     f"| {100 * a['top1']:.1f} / {100 * b['top1']:.1f} / {100 * c['top1']:.1f} "
                     f"| {a['fit_s']:.2f} / {b['fit_s']:.2f} / {c['fit_s']:.2f} | {a.get('n_iter', '')} "
                     f"| {a.get('converged', '')} |")
    same_c = {name: sum(run[k]["C"] == ref[k]["C"] for k in keys) / len(keys) for name, run in (("new", new), ("old", old))}
    worst = {name: max(abs(run[k]["top1"] - ref[k]["top1"]) for k in keys) * 100 for name, run in (("new", new), ("old", old))}
    fit = {name: sum(run[k]["fit_s"] for k in keys) for name, run in (("new", new), ("old", old), ("ref", ref))}
    converged = sum(bool(new[k].get("converged")) for k in keys)
    agrees = same_c["new"] >= AGREE_SAME_C and worst["new"] <= AGREE_TOP1_POINTS
    lines += ["", f"records: {len(keys)}; new converged on {converged}; agreement with the reference (chosen C equal on "
              f">= {100 * AGREE_SAME_C:.0f} %, top-1 within {AGREE_TOP1_POINTS} point on every record): "
              f"{'met' if agrees else 'NOT met'}",
              f"chosen C equal to the converged reference: new {100 * same_c['new']:.0f} %, "
              f"old {100 * same_c['old']:.0f} %; largest |top-1 - reference|: new {worst['new']:.2f} points, "
              f"old {worst['old']:.2f} points; fit_s sums: new {fit['new']:.1f} s, old {fit['old']:.1f} s, "
              f"reference {fit['ref']:.1f} s (old / new = {fit['old'] / max(fit['new'], 1e-9):.2f})"]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m featbench.probe_compare NEW_RUN OLD_RUN REF_RUN")
    print(compare(*map(Path, sys.argv[1:])))
