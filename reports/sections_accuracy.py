"""Report sections on accuracy: summary, how to read, task families, per task, published anchors, layers."""
from __future__ import annotations

import numpy as np

from featbench.datasets.info import metric_reasons

from . import anchors as anchors_mod
from . import figures as figs
from .section_api import ReportContext, Section, absent, register_section
from .tables import (METRIC_NAMES, METRIC_SHORT, esc, families_in_order, family_summary, html_table, layer_orders,
                     md_table, per_task_matrix, pct, pm)


# ---------------------------------------------------------------------------------------------------------
# 10 summary
# ---------------------------------------------------------------------------------------------------------

@register_section("summary", order=10)
def summary(ctx: ReportContext) -> Section:
    """Headline: best extractor per family, how many runs, tasks and records."""
    df, agg, runs = ctx.df, ctx.agg, ctx.runs.runs
    prim = agg[agg["primary"]]
    suites = sorted(set(df["suite"]) - {""})
    lines = [
        f"{len(runs)} run(s): " + ", ".join(f"{r.run_id} ({r.meta.get('status', 'status unknown')}, "
                                           f"{r.hardware('cpu')}{'; ' + r.hardware('gpu') if r.machine.get('gpus') else ''})"
                                           for r in runs),
        f"suite(s): {', '.join(suites) or '—'}; {len(df)} result records; "
        f"{prim['task'].nunique()} task(s); {prim['label'].nunique()} extractor variant(s).",
    ]
    warn = [f"run {r.run_id} did not complete (status '{r.meta.get('status', '?')}'): its results are partial"
            for r in runs if r.meta.get("status") not in ("complete", "reporting", None)]
    warn += [f"{r.path} has no run.json: provenance unknown" for r in runs if not r.meta]
    best_rows = []
    labels, tasks, cells = per_task_matrix(agg)
    for t in tasks:
        best = [cells[(l, t)] for l in labels if (l, t) in cells and cells[(l, t)]["is_best"]]
        if best:
            b = best[0]
            best_rows.append([t, " / ".join(x["label"] for x in best), pm(b["acc_mean"], b["acc_std"], b["n_trials"]),
                              METRIC_SHORT[b["metric"]]])
    html = "".join(f"<p>{esc(l)}</p>" for l in lines)
    html += "".join(f"<p class='warn'>{esc(w)}</p>" for w in warn)
    md = "\n\n".join(lines + [f"**Warning:** {w}" for w in warn])
    if best_rows:
        header = ["task", "best extractor", "accuracy (%)", "metric"]
        html += "<h3>Best per task</h3>" + html_table(header, best_rows)
        md += "\n\n### Best per task\n\n" + md_table(header, best_rows, ["l", "l", "r", "l"])
    elif df.empty:
        html += "<p class='warn'>No result records in these runs.</p>"
        md += "\n\n**No result records in these runs.**"
    return Section("summary", "Summary", html, md)


# ---------------------------------------------------------------------------------------------------------
# 20 how to read
# ---------------------------------------------------------------------------------------------------------

@register_section("how-to-read", order=20)
def how_to_read(ctx: ReportContext) -> Section:
    """How to read the report: metrics, trials, bold, row labels, anchors."""
    metric_of = dict(zip(ctx.agg["dataset"], ctx.agg["metric"]))
    conv_rows = [[d, METRIC_NAMES[metric_of[d]]] for d in sorted(metric_of)]
    reasons = metric_reasons()
    items = [
        "Accuracy: each task has one headline metric. Mean per-class accuracy where the literature reports it "
        "for the dataset (Caltech-101/256, 15-Scene; SUN-397 and MIT-67, whose balanced test sets make it equal "
        "to top-1), top-1 accuracy for every other task. Both metrics are in accuracy.csv and "
        "results-merged.csv. Tables mark mean per-class columns with †.",
        "Mean ± std over trials (random splits; fixed splits run once and show no std). The std is the sample "
        "standard deviation (n-1). If several runs hold the same trial of the same configuration (a CPU and a "
        "GPU run), their values are averaged first.",
        "Bold: the best mean of a task (ties all bold), among the rows shown for that task. A task's rows are "
        "ranked only against records with the same task, protocol and dataset_id and the same classifier kind "
        "(linear probes or 1-NN: the 'comparable group'); "
        "groups kept apart are listed in 'Kept apart (comparability)'.",
        "Rows are extractor variants: the extractor spec (without its @layer list), @layer for a CNN output, "
        "+method for a domain-adaptation method other than 'none', [classifier] when several are present.",
        "Published anchors (italic rows) come from the papers listed in 'Published anchors'; their protocols "
        "differ from featbench's and they are never ranked.",
    ]
    html = "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"
    html += "<details><summary>Metric per dataset in this report</summary>" + \
        html_table(["dataset", "headline metric"], conv_rows) + \
        "<ul>" + "".join(f"<li>{esc(r)}</li>" for r in reasons) + "</ul></details>"
    md = "\n".join(f"- {i}" for i in items) + "\n\n" + md_table(["dataset", "headline metric"], conv_rows, ["l", "l"])
    return Section("how-to-read", "How to read this report", html, md)


# ---------------------------------------------------------------------------------------------------------
# 30 task families
# ---------------------------------------------------------------------------------------------------------

@register_section("families", order=30)
def families(ctx: ReportContext) -> Section:
    """Accuracy by task family (mean over each family's tasks)."""
    s = family_summary(ctx.agg)
    if s.empty:
        return absent("families", "Accuracy by task family", "No results.")
    labels, _, _ = per_task_matrix(ctx.agg)
    fams = families_in_order(s["family"])
    lookup = {(r.label, r.family): r for r in s.itertuples()}
    rows_h, rows_m = [], []
    for l in labels:
        rh, rm = [_breakable(l)], [l]
        for f in fams:
            r = lookup.get((l, f))
            if r is None:
                rh.append("—")
                rm.append("—")
                continue
            text = pct(r.acc) + ("" if r.complete else f" ({r.n_tasks}/{r.n_family_tasks})")
            rh.append(f"<strong>{text}</strong>" if r.is_best else esc(text))
            rm.append(f"**{text}**" if r.is_best else text)
        rows_h.append(rh)
        rows_m.append(rm)
    n_tasks = s.groupby("family")["n_family_tasks"].first()
    header = ["extractor"] + [f"{f} ({n_tasks[f]} task{'s' if n_tasks[f] != 1 else ''})" for f in fams]
    note = ("Mean over the family's tasks of each task's headline accuracy (%). '(k/n)': the row has only k of "
            "the family's n tasks; such rows are not bolded. Bold: best complete row of the family.")
    html = f"<p>{esc(note)}</p>" + html_table(header, rows_h, raw=True, classes="acc")
    md = note + "\n\n" + md_table(header, rows_m)
    return Section("families", "Accuracy by task family", html, md)


# ---------------------------------------------------------------------------------------------------------
# 40 per task: table + heatmap (+ anchor rows)
# ---------------------------------------------------------------------------------------------------------

def _anchor_cells(ctx: ReportContext, tasks: list[str]) -> list[tuple[str, dict[str, str]]]:
    """(row label, {task: text}) for the published anchors matching the tasks (one row per anchor)."""
    rows = []
    refs = list(anchors_mod.REFERENCES)
    keys = anchors_mod.task_keys(ctx.agg)
    for a in anchors_mod.ANCHORS:
        hit = {t: f"{a.value:.1f}" for t in tasks if a.matches(t, keys.get(t, ""))}
        if hit:
            n = refs.index(a.reference) + 1
            rows.append((f"published: {a.what} [{n}]", hit))
    return rows


def _breakable(text: str) -> str:
    """Escaped task name or row label with break opportunities after ':' / '->' and before '@' (phones)."""
    return esc(text).replace(":", ":<wbr>").replace("-&gt;", "-&gt;<wbr>").replace("@", "<wbr>@")


@register_section("per-task", order=40)
def per_task(ctx: ReportContext) -> Section:
    """Accuracy per task (mean ± std over trials, best in bold) and its heatmap, with anchor rows."""
    labels, tasks, cells = per_task_matrix(ctx.agg)
    if not tasks:
        return absent("per-task", "Accuracy per task", "No results.")
    fam = {t: cells[next(l for l in labels if (l, t) in cells), t]["family"] for t in tasks}
    metric = {t: cells[next(l for l in labels if (l, t) in cells), t]["metric"] for t in tasks}
    ntr = {t: max(int(cells[(l, t)]["n_trials"]) for l in labels if (l, t) in cells) for t in tasks}
    # HTML: two header rows (family, task)
    fams = families_in_order(fam.values())
    ordered = [t for f in fams for t in tasks if fam[t] == f]
    head1 = "<tr><th rowspan='2'>extractor</th>" + "".join(
        f"<th colspan='{sum(fam[t] == f for t in ordered)}' class='fam'>{esc(f)}</th>" for f in fams) + "</tr>"
    head2 = "<tr>" + "".join(
        f"<th title='{esc(METRIC_NAMES[metric[t]])}, {ntr[t]} trial(s)'>{_breakable(t)}{'†' if metric[t] == 'mean_class_acc' else ''}"
        f"<br><span class='sub'>{ntr[t]} trial{'s' if ntr[t] != 1 else ''}</span></th>" for t in ordered) + "</tr>"
    body, md_rows = [], []
    for l in labels:
        tds, mds = [f"<td>{_breakable(l)}</td>"], [l]
        for t in ordered:
            r = cells.get((l, t))
            if r is None:
                tds.append("<td class='na'>—</td>")
                mds.append("—")
                continue
            text = pm(r["acc_mean"], r["acc_std"], r["n_trials"])
            tip = f"{int(r['n_trials'])} trial(s), {int(r['n_runs'])} run(s); top-1 {pct(r['top1_mean'])}, " \
                  f"mean-class {pct(r['mean_class_acc_mean'])}"
            tds.append(f"<td title='{esc(tip)}'>" + (f"<strong>{esc(text)}</strong>" if r["is_best"] else esc(text))
                       + "</td>")
            mds.append(f"**{text}**" if r["is_best"] else text)
        body.append("<tr>" + "".join(tds) + "</tr>")
        md_rows.append(mds)
    for label, hit in _anchor_cells(ctx, ordered):
        body.append("<tr class='anchor'><td>" + esc(label) + "</td>" +
                    "".join(f"<td>{esc(hit.get(t, ''))}</td>" for t in ordered) + "</tr>")
        md_rows.append([f"*{label}*"] + [f"*{hit[t]}*" if t in hit else "" for t in ordered])
    table = (f"<div class='table-wrap'><table class='acc'><thead>{head1}{head2}</thead>"
             f"<tbody>{''.join(body)}</tbody></table></div>")
    note = ("Headline accuracy (%), mean ± std over trials; † = mean per-class accuracy, otherwise top-1. "
            "Bold: best of the task. Italic rows: published numbers on the corresponding full datasets "
            "(different protocols; see 'Published anchors').")
    values = np.array([[cells[(l, t)]["acc_mean"] if (l, t) in cells else np.nan for t in ordered] for l in labels],
                      dtype=float)
    best = np.array([[bool(cells[(l, t)]["is_best"]) if (l, t) in cells else False for t in ordered] for l in labels])
    fig = ctx.figure(figs.heatmap(labels, [t + ("†" if metric[t] == "mean_class_acc" else "") for t in ordered],
                                  values, best), "accuracy-heatmap",
                     "Headline accuracy (%) per extractor variant and task; red boxes: best of each task")
    header_md = ["extractor"] + [f"{t}{'†' if metric[t] == 'mean_class_acc' else ''} ({fam[t]})" for t in ordered]
    html = f"<p>{esc(note)}</p>{table}{fig.html}"
    md = note + "\n\n" + md_table(header_md, md_rows) + "\n\n" + fig.md
    return Section("per-task", "Accuracy per task", html, md)


# ---------------------------------------------------------------------------------------------------------
# 50 anchors
# ---------------------------------------------------------------------------------------------------------

@register_section("anchors", order=50)
def anchors_section(ctx: ReportContext) -> Section:
    """Published anchors beside the run's best row of the same kind."""
    rows = anchors_mod.anchor_rows(ctx.agg)
    refs = list(anchors_mod.REFERENCES)
    used = sorted({refs.index(r["anchor"].reference) for r in rows})
    header = ["task", "this report: row", "this report (%)", "published (%)", "published method", "metric",
              "reference", "differences"]
    th, tm = [], []
    for r in rows:
        a = r["anchor"]
        run_val = "—" if r["run_value"] is None else pm(r["run_value"], r["run_std"], r["run_trials"])
        pub = f"{a.value:.1f}" + (f" ± {a.std:.1f}" if a.std is not None else "")
        diff = anchors_mod.differences_note(a, r["note"])
        cite = f"[{refs.index(a.reference) + 1}] {anchors_mod.SHORT_CITES[a.reference]}"
        cells = [r["task"], r["run_label"] or "—", run_val, pub, f"{a.what}; {a.protocol}", METRIC_SHORT[a.metric],
                 cite, diff]
        th.append([esc(c) for c in cells[:7]] + [f"<span class='note'>{esc(diff)}</span>"])
        tm.append(cells)
    intro = ("Published numbers beside this report's best row of the same kind (CNN or classical) on the task "
             "whose name matches. The datasets and protocols differ (see the last column): read them as a sanity "
             "check of the ordering, not as a reproduction: these numbers are only compared. Numbers reproduced "
             "from the published feature files themselves are in 'Reproduced published tables' (when this report "
             "has such runs). How each published value was checked is in brackets; re-read the original table "
             "before citing it.")
    ref_list = [f"[{i + 1}] {anchors_mod.REFERENCES[refs[i]]}" for i in range(len(refs))]
    if not rows:
        html = "<p class='absent'>No task in this report matches a published anchor (anchors exist for " + \
            esc(", ".join(dict.fromkeys(a.dataset for a in anchors_mod.ANCHORS))) + "; they are only compared). " \
            "Tasks on published feature files are set beside the tables they reproduce in 'Reproduced published " \
            "tables'.</p>"
        md = ("_No task in this report matches a published anchor (numbers only compared). Tasks on published "
              "feature files are set beside the tables they reproduce in 'Reproduced published tables'._")
    else:
        html = f"<p>{esc(intro)}</p>" + html_table(header, th, raw=True, classes="anchors")
        md = intro + "\n\n" + md_table(header, tm, ["l"] * 8)
    html += "<h3>References</h3><ol class='refs'>" + "".join(
        f"<li{' class=used' if i in used else ''}>{esc(anchors_mod.REFERENCES[k])}</li>" for i, k in enumerate(refs)) \
        + "</ol>"
    md += "\n\n**References**\n\n" + "\n".join(f"- {r}" for r in ref_list)
    return Section("anchors", "Published anchors", html, md)


# ---------------------------------------------------------------------------------------------------------
# 60 layer study
# ---------------------------------------------------------------------------------------------------------

@register_section("layers", order=60)
def layers(ctx: ReportContext) -> Section:
    """Accuracy against CNN depth (the layer study)."""
    agg = ctx.agg
    cnn = agg[agg["primary"] & agg["extractor_family"].eq("cnn") & agg["method"].eq("none")
              & agg["classifier"].eq(ctx.primary_classifier)]
    if cnn.empty:
        return absent("layers", "CNN layers: accuracy against depth",
                       "No CNN extractor (extractor_family 'cnn') in these runs, so there is no layer study.")
    orders = layer_orders(ctx.df)
    html, md = [], []
    intro = ("For each CNN, the headline accuracy of a linear classifier on each tapped layer, layers in network "
             "order (the order they appear in the results), one line per task; error bars: std over trials. "
             "As in DeCAF's layer study (Donahue et al. 2014, Table 1/Fig. 1).")
    html.append(f"<p>{esc(intro)}</p>")
    md.append(intro)
    for i, (ex, g) in enumerate(cnn.groupby("extractor", sort=False)):
        layers_ = [l for l in orders.get(ex, []) if l in set(g["layer"])]
        tasks = list(dict.fromkeys(g.sort_values("order")["task"]))
        series = {}
        rows = []
        for t in tasks:
            gt = g[g["task"] == t].set_index("layer")
            mean = np.array([gt["acc_mean"].get(l, np.nan) for l in layers_], dtype=float)
            std = np.array([gt["acc_std"].get(l, np.nan) for l in layers_], dtype=float)
            metric = gt["metric"].iloc[0]
            series[t + ("†" if metric == "mean_class_acc" else "")] = (mean, std)
            top = np.nanmax(mean) if np.isfinite(mean).any() else np.nan
            rows.append([t] + [(f"**{pct(m)}**" if np.isfinite(m) and np.isclose(m, top, rtol=0, atol=1e-12) else pct(m))
                               for m in mean])
        title = f"{ex} ({len(layers_)} layer{'s' if len(layers_) != 1 else ''})"
        html.append(f"<h3>{esc(title)}</h3>")
        md.append(f"### {title}")
        if len(layers_) < 2:
            msg = "Only one layer of this CNN is in the results: no depth curve (tap more layers with @l1+l2+...)."
            html.append(f"<p class='absent'>{esc(msg)}</p>")
            md.append(f"_{msg}_")
        else:
            fig = ctx.figure(figs.layer_study(ex, layers_, series, "headline accuracy"), f"layers-{i}",
                             f"{ex}: accuracy against depth (layers in network order)")
            html.append(fig.html)
            md.append(fig.md)
        header = ["task"] + layers_
        html.append(html_table(header, [[esc(c).replace("**", "") if not str(c).startswith("**") else
                                         f"<strong>{esc(str(c).strip('*'))}</strong>" for c in r] for r in rows],
                               raw=True, classes="acc"))
        md.append(md_table(header, rows))
    return Section("layers", "CNN layers: accuracy against depth", "".join(html), "\n\n".join(md))
