"""Build one report from one or more run folders.

``build_report(run_dirs, out)`` writes into ``out``:

* ``report.html``: self-contained (CSS inline, figures as PNG data URIs, no external URL),
  readable on a phone (responsive layout, tables scroll sideways with a sticky first column);
* ``report.md``: the same sections in Markdown, figures linked from ``figures/*.png``;
* ``accuracy.csv``: mean ± std per comparable group × variant (both metrics, headline marked);
* ``accuracy.tex``: the per-task table (booktabs; best in bold);
* ``results-merged.csv``: every record of every run, with the run folder;
* ``domain_matrices.csv`` when there are domain-shift tasks; ``figures/``.

Sections are built by :mod:`featbench.reports.sections` (add your own with ``register_section``);
the image galleries by :mod:`featbench.reports.gallery`.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

import featbench
from featbench.atomic import atomic_write_text, atomic_write_with

from .data import load_runs
from .sections import ReportContext, Section, build_sections
from .tables import (METRIC_SHORT, aggregate, comparable_groups, families_in_order, latex_escape, per_task_matrix,
                     pct)


def load_template():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("featbench.reports", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), keep_trailing_newline=True)
    return env.get_template("report.html.j2")


def accuracy_csv(agg: pd.DataFrame, path: Path) -> None:
    cols = ["task", "family", "dataset", "protocol", "dataset_id", "primary", "label", "extractor", "extractor_family",
            "layer", "method", "classifier", "extractor_config", "weights", "metric", "acc_mean", "acc_std",
            "top1_mean", "top1_std", "mean_class_acc_mean", "mean_class_acc_std", "n_trials", "n_runs", "rank",
            "is_best", "devices", "dim"]
    out = agg.copy()
    out["devices"] = out["devices"].map(lambda d: "+".join(d))
    out.sort_values(["task", "primary", "rank"], ascending=[True, False, True])[cols].to_csv(path, index=False,
                                                                                             float_format="%.6g")


def latex_table(agg: pd.DataFrame) -> str:
    """The per-task table as a booktabs tabular: rows variants, columns tasks grouped by family, best bold."""
    labels, tasks, cells = per_task_matrix(agg)
    if not tasks:
        return "% no results\n"
    fam = {t: next(cells[(l, t)]["family"] for l in labels if (l, t) in cells) for t in tasks}
    metric = {t: next(cells[(l, t)]["metric"] for l in labels if (l, t) in cells) for t in tasks}
    fams = families_in_order(fam.values())
    ordered = [t for f in fams for t in tasks if fam[t] == f]
    lines = [
        "% featbench: headline accuracy (%), mean $\\pm$ std over trials; best of each task in bold.",
        "% \\dagger: mean per-class accuracy, otherwise top-1. Needs \\usepackage{booktabs}.",
        "\\begin{tabular}{l" + "r" * len(ordered) + "}",
        "\\toprule",
    ]
    spans, col = [], 2
    head = [" "]
    rules = []
    for f in fams:
        n = sum(fam[t] == f for t in ordered)
        spans.append(f"\\multicolumn{{{n}}}{{c}}{{{latex_escape(f)}}}")
        rules.append(f"\\cmidrule(lr){{{col}-{col + n - 1}}}")
        col += n
    lines.append(" & ".join([""] + spans) + " \\\\")
    lines.append(" ".join(rules))
    for t in ordered:
        head.append(latex_escape(t) + ("$^\\dagger$" if metric[t] == "mean_class_acc" else ""))
    lines.append("Extractor & " + " & ".join(head[1:]) + " \\\\")
    lines.append("\\midrule")
    for l in labels:
        row = [latex_escape(l)]
        for t in ordered:
            r = cells.get((l, t))
            if r is None:
                row.append("--")
                continue
            text = pct(r["acc_mean"]) + (f" $\\pm$ {pct(r['acc_std'])}" if r["n_trials"] > 1 else "")
            row.append(f"\\textbf{{{text}}}" if r["is_best"] else text)
        lines.append(" & ".join(row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def render_markdown(title: str, subtitle: str, sections: list[Section]) -> str:
    parts = [f"# {title}", "", subtitle, ""]
    parts += ["Contents: " + " · ".join(f"[{s.title}](#{s.id})" for s in sections), ""]
    for s in sections:
        parts += [f"<a id=\"{s.id}\"></a>", f"## {s.title}", "", s.md.strip(), ""]
    return "\n".join(parts)


def build_report(run_dirs: list[Path], out: Path) -> Path:
    """Merge the runs in ``run_dirs`` into one report in ``out``; return the path of report.html."""
    runs = load_runs([Path(d) for d in run_dirs])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = runs.df
    agg = aggregate(df)
    groups = comparable_groups(df)
    ctx = ReportContext(runs=runs, agg=agg, out=out, groups=groups)
    sections = build_sections(ctx)

    suites = sorted(set(df["suite"]) - {""}) if len(df) else []
    title = "featbench report" + (f": {', '.join(suites)}" if suites else "")
    started = sorted(str(r.meta.get("started", "")) for r in runs.runs if r.meta.get("started"))
    subtitle = (f"{len(runs.runs)} run(s)" + (f", started {started[0]}" + (f" to {started[-1]}" if len(started) > 1 else "")
                                              if started else "") +
                f"; {len(df)} result records; headline metrics: "
                f"{', '.join(sorted({METRIC_SHORT[m] for m in agg['metric']})) or '—'}.")
    html = load_template().render(title=title, subtitle=subtitle, sections=sections, version=featbench.__version__,
                                  n_runs=len(runs.runs))
    atomic_write_text(out / "report.md", render_markdown(title, subtitle, sections))
    atomic_write_with(out / "accuracy.csv", lambda tmp: accuracy_csv(agg, tmp))
    atomic_write_text(out / "accuracy.tex", latex_table(agg))
    merged = df.copy()
    merged["run_dir"] = merged["_run"].map(lambda i: str(runs.runs[int(i)].path))
    merged["extractor"] = merged["extractor_spec"]
    merged = merged.drop(columns=[c for c in ("_run", "_order", "extractor_spec") if c in merged.columns])
    atomic_write_with(out / "results-merged.csv", lambda tmp: merged.to_csv(tmp, index=False))
    atomic_write_text(out / "report.html", html)  # last: a report.html means the report is whole
    return out / "report.html"


__all__ = ["build_report", "latex_table", "render_markdown"]
