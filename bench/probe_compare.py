"""Compare the classifier records of runs on the same cached features (``featbench run`` outputs):
the torch probe, the old scikit-learn setting, and scikit-learn run to convergence.

``python -m featbench.probe_compare NEW_RUN [OLD_RUN] REF_RUN`` prints one Markdown row per record
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


def _each(runs: dict[str, dict], key: tuple, field: str, fmt: str, scale: float = 1) -> str:
    return " / ".join(fmt.format(scale * run[key][field]) for run in runs.values())


def compare(new_dir: Path, old_dir: Path | None, ref_dir: Path) -> str:
    """The table and summary; ``old_dir`` None leaves the old setting's columns out (the reference
    run alone is hours on large records, the old setting's another run)."""
    new, ref = load(new_dir), load(ref_dir)
    runs = {"new": new, **({"old": load(old_dir)} if old_dir is not None else {}), "ref": ref}
    keys = [k for k in new if all(k in run for run in runs.values())]
    if not keys:
        return "no records in common"
    names = "/".join(runs)
    lines = [f"| task | trial | extractor@layer | method | clf | n_train | dim | C {names} | top-1 {names} (%) "
             f"| fit_s {names} | n_iter new | converged new |", "|" + "---|" * 12]
    for k in keys:
        a = new[k]
        layer = f"{k[2]}@{k[3]}" if k[3] else k[2]
        lines.append(f"| {k[0]} | {k[1]} | {layer} | {k[4]} | {k[5]} | {a['n_train']} | {a['dim']} "
                     f"| {_each(runs, k, 'C', '{:g}')} | {_each(runs, k, 'top1', '{:.1f}', 100)} "
                     f"| {_each(runs, k, 'fit_s', '{:.2f}')} | {a.get('n_iter', '')} "
                     f"| {a.get('converged', '')} |")
    compared = {name: run for name, run in runs.items() if name != "ref"}
    same_c = {name: sum(run[k]["C"] == ref[k]["C"] for k in keys) / len(keys) for name, run in compared.items()}
    worst = {name: max(abs(run[k]["top1"] - ref[k]["top1"]) for k in keys) * 100 for name, run in compared.items()}
    fit = {name: sum(run[k]["fit_s"] for k in keys) for name, run in runs.items()}
    converged = sum(bool(new[k].get("converged")) for k in keys)
    agrees = same_c["new"] >= AGREE_SAME_C and worst["new"] <= AGREE_TOP1_POINTS
    lines += ["", f"records: {len(keys)}; new converged on {converged}; agreement with the reference (chosen C equal on "
              f">= {100 * AGREE_SAME_C:.0f} %, top-1 within {AGREE_TOP1_POINTS} point on every record): "
              f"{'met' if agrees else 'NOT met'}",
              "chosen C equal to the converged reference: " + ", ".join(f"{n} {100 * v:.0f} %" for n, v in same_c.items())
              + "; largest |top-1 - reference|: " + ", ".join(f"{n} {v:.2f} points" for n, v in worst.items())
              + "; fit_s sums: " + ", ".join(f"{'reference' if n == 'ref' else n} {v:.1f} s" for n, v in fit.items())
              + (f" (old / new = {fit['old'] / max(fit['new'], 1e-9):.2f})" if "old" in fit else "")]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python -m featbench.probe_compare NEW_RUN [OLD_RUN] REF_RUN")
    dirs = list(map(Path, sys.argv[1:]))
    print(compare(dirs[0], dirs[1] if len(dirs) == 3 else None, dirs[-1]))
