"""Report sections: each builder takes the :class:`ReportContext` and returns a :class:`Section`.

Extension point: other modules add sections with :func:`register_section`, e.g. the speed
page::

    from featbench.reports.sections import Section, register_section

    @register_section("speed-history", order=75)
    def speed_history(ctx):
        speeds = [run.speed for run in ctx.runs.runs if run.speed]   # parsed speed.json files
        if not speeds:
            return None                                               # section left out
        fig = ...                                                    # a matplotlib Figure
        return Section("speed-history", "Speed history", html=ctx.figure(fig, "speed-history", "...").html,
                       md="...")

``order`` places the section (built-ins use 10, 20, ... 130; ``featbench list sections``); ids are unique. A builder
that raises does not break the report: its section says what failed.
"""
from __future__ import annotations

import dataclasses
import json
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from featbench.datasets.info import metric_reasons
from featbench.registry import Registry

import numpy as np
import pandas as pd

from featbench.atomic import OutputWriteError, atomic_write_bytes, atomic_write_with

from . import anchors as anchors_mod
from . import embedding as emb
from . import figures as figs
from .data import RunSet
from .speed_page import speed_section
from .tables import (METRIC_NAMES, METRIC_SHORT, esc, families_in_order,
                     family_summary, html_table, is_domain_task, layer_orders, md_table,
                     parse_domain_task, per_task_matrix, pct, pm, strip_layers)


@dataclasses.dataclass
class Section:
    id: str
    title: str
    html: str = ""
    md: str = ""
    order: float = 100.0


@dataclasses.dataclass
class Figure:
    name: str
    alt: str
    uri: str
    relpath: str

    @property
    def html(self) -> str:
        return f"<figure><img alt='{esc(self.alt)}' src='{self.uri}'><figcaption>{esc(self.alt)}</figcaption></figure>"

    @property
    def md(self) -> str:
        return f"![{self.alt}]({self.relpath})"


@dataclasses.dataclass
class ReportContext:
    runs: RunSet
    agg: pd.DataFrame
    out: Path
    groups: pd.DataFrame
    figures: list[Figure] = dataclasses.field(default_factory=list)
    extra_files: list[Path] = dataclasses.field(default_factory=list)

    @property
    def df(self) -> pd.DataFrame:
        return self.runs.df

    def figure(self, fig, name: str, alt: str) -> Figure:
        """Save ``fig`` as ``figures/<name>.png`` (for report.md) and return it with its data URI (for HTML)."""
        png = figs.png_bytes(fig)
        folder = self.out / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / f"{name}.png", png)
        f = Figure(name=name, alt=alt, uri=figs.data_uri(png), relpath=f"figures/{name}.png")
        self.figures.append(f)
        return f

    @property
    def primary_classifier(self) -> str:
        c = self.agg.loc[self.agg["primary"], "classifier"]
        return Counter(c).most_common(1)[0][0] if len(c) else "logreg"


Builder = Callable[[ReportContext], "Section | None"]
#: section id -> builder; each entry's ``order`` (metadata) places it on the page
SECTIONS: Registry[Builder] = Registry("report section")


def register_section(section_id: str, order: float = 100.0) -> Callable[[Builder], Builder]:
    """Decorator: add a section builder under a new id; ``order`` sorts sections on the page."""
    return SECTIONS.register(section_id, order=order)


def registered() -> list[tuple[float, str, Builder]]:
    return sorted(((e.meta["order"], sid, e.obj) for sid, e in SECTIONS.items()), key=lambda r: r[0])


def build_sections(ctx: ReportContext) -> list[Section]:
    out = []
    for order, sid, fn in registered():
        try:
            sec = fn(ctx)
        except OutputWriteError:  # a full disk stops the report; it must not look finished
            raise
        except Exception as exc:  # one broken section must not lose the whole report
            tb = traceback.format_exc(limit=3)
            sec = Section(sid, sid.replace("-", " ").capitalize(),
                          html=f"<p class='warn'>This section failed to build: {esc(type(exc).__name__)}: "
                               f"{esc(exc)}</p><pre>{esc(tb)}</pre>",
                          md=f"This section failed to build: `{type(exc).__name__}: {exc}`")
        finally:
            figs.close_all()
        if sec is not None:
            sec.order = order
            out.append(sec)
    return out


def _absent(sid: str, title: str, why: str) -> Section:
    return Section(sid, title, html=f"<p class='absent'>{esc(why)}</p>", md=f"_{why}_")


# ---------------------------------------------------------------------------------------------------------
# 10 summary
# ---------------------------------------------------------------------------------------------------------

@register_section("summary", order=10)
def summary(ctx: ReportContext) -> Section:
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
        "ranked only against records with the same task, protocol and dataset_id (the 'comparable group'); "
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
    s = family_summary(ctx.agg)
    if s.empty:
        return _absent("families", "Accuracy by task family", "No results.")
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
    labels, tasks, cells = per_task_matrix(ctx.agg)
    if not tasks:
        return _absent("per-task", "Accuracy per task", "No results.")
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
             "check of the ordering, not as a reproduction. How each published value was checked is in brackets; "
             "re-read the original table before citing it.")
    ref_list = [f"[{i + 1}] {anchors_mod.REFERENCES[refs[i]]}" for i in range(len(refs))]
    if not rows:
        html = "<p class='absent'>No task in this report matches a published anchor (anchors exist for " + \
            esc(", ".join(dict.fromkeys(a.dataset for a in anchors_mod.ANCHORS))) + ").</p>"
        md = "_No task in this report matches a published anchor._"
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
    agg = ctx.agg
    cnn = agg[agg["primary"] & agg["extractor_family"].eq("cnn") & agg["method"].eq("none")
              & agg["classifier"].eq(ctx.primary_classifier)]
    if cnn.empty:
        return _absent("layers", "CNN layers: accuracy against depth",
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


# ---------------------------------------------------------------------------------------------------------
# 70 speed vs accuracy
# ---------------------------------------------------------------------------------------------------------

def speed_table(ctx: ReportContext) -> pd.DataFrame:
    """Median images/s per (extractor, extractor_config, device kind, hardware), from the records and speed.json."""
    df = ctx.df
    rows = []
    for (ex, cfg, kind, run), g in df.groupby(["extractor", "extractor_config", "device_kind", "_run"], sort=False):
        v = g["img_per_s"].astype(float)
        v = v[np.isfinite(v) & (v > 0)]
        rows.append({"extractor": ex, "extractor_config": cfg, "device_kind": kind,
                     "hardware": ctx.runs.runs[run].hardware(kind), "img_per_s": float(v.median()) if len(v) else np.nan,
                     "n": int(len(v)), "source": "results"})
    for i, run in enumerate(ctx.runs.runs):  # speed.json from `featbench speed`: fills gaps (e.g. cached features)
        for rec in _speed_records(run.speed):
            kind = "gpu" if str(rec.get("device", "cpu")).lower().startswith(("cuda", "gpu", "mps")) else "cpu"
            rows.append({"extractor": rec.get("extractor", ""), "extractor_config": rec.get("extractor_config", ""),
                         "device_kind": kind, "hardware": rec.get("hardware") or run.hardware(kind),
                         "img_per_s": float(rec.get("img_per_s", np.nan)), "n": 1, "source": "speed.json"})
    t = pd.DataFrame(rows, columns=["extractor", "extractor_config", "device_kind", "hardware", "img_per_s", "n",
                                    "source"])
    t["img_per_s"] = pd.to_numeric(t["img_per_s"], errors="coerce").astype(float)
    return t


def _speed_records(speed: Any) -> list[dict[str, Any]]:
    """Records of a speed.json: a list of dicts, or {"records": [...]}, each with extractor, device, img_per_s."""
    if isinstance(speed, dict):
        speed = speed.get("records", [])
    return [r for r in speed or [] if isinstance(r, dict) and "extractor" in r and "img_per_s" in r]


@register_section("speed", order=70)
def speed(ctx: ReportContext) -> Section:
    title = "Accuracy against speed (Pareto front)"
    if ctx.df.empty:
        return _absent("speed", title, "No results.")
    st = speed_table(ctx)
    measured = st[np.isfinite(st["img_per_s"])]
    agg = ctx.agg
    base = agg[agg["primary"] & agg["method"].eq("none") & agg["classifier"].eq(ctx.primary_classifier)]
    unmeasured = sorted(set(base["extractor"]) - set(measured["extractor"]))
    html, md, panels, table_rows, commons = [], [], [], [], []
    for (kind, hw), sk in measured.groupby(["device_kind", "hardware"], sort=True):
        speeds = sk.groupby("extractor")["img_per_s"].median()
        exs = [e for e in speeds.index if e in set(base["extractor"])]
        if not exs:
            continue
        task_sets = {e: set(base[base["extractor"] == e]["task"]) for e in exs}
        counts = Counter(t for ts in task_sets.values() for t in ts)
        top = max(counts.values())
        common = {t for t, c in counts.items() if c == top}  # the tasks most extractors have
        pts = []
        for e in exs:
            complete = common <= task_sets[e]
            b = base[base["extractor"] == e]
            if complete:
                b = b[b["task"].isin(common)]
            per_label = b.groupby("label").agg(acc=("acc_mean", "mean"), fam=("extractor_family", "first"))
            lab = per_label["acc"].idxmax()
            pts.append({"label": lab, "extractor": e, "acc": per_label.loc[lab, "acc"], "img_per_s": speeds[e],
                        "is_cnn": per_label.loc[lab, "fam"] == "cnn", "complete": complete,
                        "over": (f"the {len(common)} common task(s)" if complete else
                                 f"its own {len(task_sets[e])} task(s) only: " + ", ".join(sorted(task_sets[e])))})
        pts = pd.DataFrame(pts)
        front = np.zeros(len(pts), dtype=bool)
        c = pts["complete"].to_numpy(bool)
        front[c] = figs.pareto_front(pts.loc[c, "img_per_s"].to_numpy(float), pts.loc[c, "acc"].to_numpy(float))
        pts["front"] = front
        common_text = ", ".join(sorted(common))
        panels.append((f"{kind.upper()}: {hw}", pts))
        commons.append(f"{kind.upper()} {hw}: {common_text}")
        for p in pts.sort_values("img_per_s", ascending=False).itertuples():
            table_rows.append([kind.upper(), hw, p.label, f"{p.img_per_s:.3g}", pct(p.acc), "yes" if p.front else "",
                               p.over])
    panels.sort(key=lambda p: (not p[0].startswith("CPU"), p[0]))
    note = ("x: feature-extraction throughput (images/s, median over the run's tasks; includes decoding and, for "
            "learned encodings, fitting). y: headline accuracy, method 'none', classifier "
            f"'{ctx.primary_classifier}'. A CNN is shown at its best layer (one forward pass yields all layers). "
            "CPU and GPU, and different machines, are separate panels: their speeds are not comparable. Accuracy is "
            "averaged over the tasks most extractors share (" + "; ".join(commons) + "); an extractor without all "
            "of them is drawn hollow at the mean of its own tasks and kept off the Pareto front.")
    if not panels:
        why = ("No speed was measured in these runs: every feature came from the cache (a cache hit records no "
               "throughput). Rerun with --no-cache, or run `featbench speed`, whose speed.json a report picks up.")
        return _absent("speed", title, why)
    fig = ctx.figure(figs.speed_accuracy(panels, "headline accuracy (%)"), "speed-accuracy",
                     "Accuracy against extraction speed (log scale), Pareto front in red, CPU and GPU apart")
    header = ["device", "hardware", "extractor", "images/s", "accuracy (%)", "Pareto", "accuracy over"]
    html.append(f"<p>{esc(note)}</p>{fig.html}" + html_table(header, table_rows))
    md.append(note + "\n\n" + fig.md + "\n\n" + md_table(header, table_rows, ["l", "l", "l", "r", "r", "l", "l"]))
    if unmeasured:
        msg = ("No throughput for " + ", ".join(unmeasured) +
               ": their features came from the cache. Rerun with --no-cache or `featbench speed` for their speed.")
        html.append(f"<p class='absent'>{esc(msg)}</p>")
        md.append(f"_{msg}_")
    return Section("speed", title, "".join(html), "\n\n".join(md))


@register_section("speed-detail", order=75)
def speed_detail(ctx: ReportContext) -> Section | None:
    """The speed page of ``featbench speed`` (reports/speed_page.py) for a run folder holding speed.json."""
    runs = [r for r in ctx.runs.runs if r.speed]
    if not runs:
        return None  # no speed.json: section left out
    html, md = [], []
    for run in runs:
        sec = speed_section(run.speed, level=3)
        html.append(f"<h3>{esc(run.run_id)}</h3>{sec.html}")
        md.append(f"### {run.run_id}\n\n{sec.markdown}")
    return Section("speed-detail", "Speed measurements (featbench speed)", "".join(html), "\n\n".join(md))


# ---------------------------------------------------------------------------------------------------------
# 80 domain adaptation
# ---------------------------------------------------------------------------------------------------------

def domain_matrices(agg: pd.DataFrame) -> dict[str, tuple[list[str], list[str], dict[str, np.ndarray], dict[str, float]]]:
    """Per dataset and protocol: (sources, targets, {variant label: source × target matrix}, {label: mean
    over its shifts}). The key is the dataset name, followed by the protocol when a dataset was run under
    several (e.g. source-only and source+target shifts are separate matrices)."""
    prim = agg[agg["primary"] & agg["task"].map(is_domain_task)]
    out = {}
    parsed = prim["task"].map(parse_domain_task)
    prim = prim.assign(_ds=parsed.map(lambda p: p[0]), _ds_src=parsed.map(lambda p: p[1]),
                       _ds_tgt=parsed.map(lambda p: p[2]))
    protocols = prim.groupby("_ds")["protocol"].nunique()
    prim = prim.assign(_key=[ds if protocols[ds] == 1 else f"{ds} — {proto}"
                             for ds, proto in zip(prim["_ds"], prim["protocol"])])
    for ds, g in prim.groupby("_key", sort=False):
        sources, targets = sorted(set(g["_ds_src"])), sorted(set(g["_ds_tgt"]))
        si, ti = {d: i for i, d in enumerate(sources)}, {d: i for i, d in enumerate(targets)}
        mats, means = {}, {}
        for label, gl in g.groupby("label", sort=False):
            m = np.full((len(sources), len(targets)), np.nan)
            for src, tgt, acc in zip(gl["_ds_src"], gl["_ds_tgt"], gl["acc_mean"]):
                m[si[src], ti[tgt]] = acc
            mats[label] = m
            means[label] = float(gl["acc_mean"].mean())
        out[ds] = (sources, targets, mats, means)
    return out


@register_section("domain", order=80)
def domain(ctx: ReportContext) -> Section:
    title = "Domain adaptation: source × target"
    mats = domain_matrices(ctx.agg)
    if not mats:
        return _absent("domain", title, "No domain-shift task (named DATASET:SOURCE->TARGET) in these runs.")
    html, md, csv_rows = [], [], []
    note = ("Top-1 accuracy (%) training on the source domain (rows) and testing on the target (columns); grey: "
            "shift not run (or source = target). One panel per extractor variant and adaptation method ('+method'; none = source only). "
            "Panels: the 9 variants with the best mean over the shifts run; every variant is in domain_matrices.csv.")
    html.append(f"<p>{esc(note)}</p>")
    md.append(note)
    for i, (ds, (sources, targets, m, means)) in enumerate(mats.items()):
        for label, mat in m.items():
            for a, src in enumerate(sources):
                for b, tgt in enumerate(targets):
                    if np.isfinite(mat[a, b]):
                        csv_rows.append({"dataset": ds, "variant": label, "source": src, "target": tgt,
                                         "accuracy": mat[a, b]})
        top = sorted(means, key=means.get, reverse=True)[:9]
        fig = ctx.figure(figs.domain_matrices(ds, sources, targets, [(l, m[l]) for l in top]), f"domain-{i}",
                         f"{ds}: source × target accuracy per extractor variant")
        html.append(f"<h3>{esc(ds)}</h3>{fig.html}")
        md.append(f"### {ds}\n\n{fig.md}")
        shifts = [(a, b) for a in range(len(sources)) for b in range(len(targets))
                  if any(np.isfinite(mat[a, b]) for mat in m.values())]
        header = ["variant"] + [f"{sources[a]}→{targets[b]}" for a, b in shifts] + ["mean"]
        rows = []
        for l in sorted(m, key=means.get, reverse=True):
            rows.append([l] + [pct(m[l][a, b]) for a, b in shifts] + [pct(means[l])])
        html.append(html_table(header, rows))
        md.append(md_table(header, rows))
    atomic_write_with(ctx.out / "domain_matrices.csv", lambda tmp: pd.DataFrame(csv_rows).to_csv(tmp, index=False))
    ctx.extra_files.append(ctx.out / "domain_matrices.csv")
    return Section("domain", title, "".join(html), "\n\n".join(md))


# ---------------------------------------------------------------------------------------------------------
# 90 embedding
# ---------------------------------------------------------------------------------------------------------

@register_section("embedding", order=90)
def embedding(ctx: ReportContext) -> Section:
    title = "Feature embedding (t-SNE)"
    samples, reasons = [], []
    for run in ctx.runs.runs:
        try:
            smp = emb.read_features_sample(run.path)
        except Exception as exc:
            reasons.append(f"{run.path}/{emb.SAMPLE_DIR}: unreadable ({exc})")
            continue
        if smp:
            samples.append(smp)
    if not samples:
        reasons.append("no run folder has features-sample/ (written by the runner)")
    sample = emb.merge_samples(samples)
    if sample is None or not sample["features"]:
        return _absent("embedding", title, "No 2-D embedding: " + "; ".join(reasons) + ".")
    task = sample["task"]
    a = ctx.agg[(ctx.agg["task"] == task) & ctx.agg["primary"] & ctx.agg["method"].eq("none")]
    score = {(r.extractor, r.layer): r.acc_mean for r in a.itertuples()}
    chosen = emb.choose_panels([(strip_layers(f[0]), *f[1:]) for f in sample["features"]], score)
    labels = np.asarray(sample["labels"])
    panels = []
    for spec, layer, fam, X in chosen:
        Y = emb.tsne_2d(X)
        acc = score.get((spec, layer))
        name = f"{spec}{'@' + layer if layer else ''} ({fam or '?'})" + (f", acc {pct(acc)} %" if acc is not None else "")
        panels.append((name, Y, labels))
    fig = ctx.figure(figs.embedding_panels(panels, sample["classes"],
                                           f"t-SNE of {len(labels)} {sample.get('split', 'test')} images of {task}"),
                     "embedding", f"t-SNE of {task} features, coloured by class")
    note = (f"t-SNE (scikit-learn; rows L2-normalised, PCA to 50 dimensions, perplexity ≤ 30, seed 0) of the "
            f"features of {len(labels)} images of {task}, coloured by class, as in DeCAF's Figure 1 (classical "
            f"features beside CNN layers, when both exist). Features from {sample.get('source', '?')}."
            + (f" Not available: {'; '.join(sample['skipped'])}." if sample.get("skipped") else ""))
    return Section("embedding", title, f"<p>{esc(note)}</p>{fig.html}", f"{note}\n\n{fig.md}")


# ---------------------------------------------------------------------------------------------------------
# 100 confusion matrices
# ---------------------------------------------------------------------------------------------------------

def _confusion(ctx: ReportContext, row: pd.Series) -> tuple[np.ndarray | None, list[str]]:
    cm, classes = None, []
    for run_idx in row["runs"]:
        for p in ctx.runs.runs[run_idx].predictions():
            if (p.get("task"), strip_layers(p.get("extractor", "")), p.get("layer") or "", p.get("method") or "none",
                    p.get("classifier")) != (row["task"], row["extractor"], row["layer"], row["method"], row["classifier"]):
                continue
            classes = p["classes"]
            k = len(classes)
            m = np.zeros((k, k), dtype=np.int64)
            np.add.at(m, (np.asarray(p["y_true"], dtype=int), np.asarray(p["y_pred"], dtype=int)), 1)
            cm = m if cm is None else cm + m
    return cm, classes


@register_section("confusion", order=100)
def confusion(ctx: ReportContext) -> Section:
    title = "Confusion matrices: best and worst extractor"
    prim = ctx.agg[ctx.agg["primary"] & ctx.agg["method"].eq("none")]
    n_classes = {}
    for run in ctx.runs.runs:
        for t, info in (run.meta.get("tasks") or {}).items():
            n_classes[t] = (info.get("dataset") or {}).get("classes")
    # each extractor at its best layer / variant on the task: "best and worst extractor", not worst CNN layer
    per_ex = prim.sort_values("acc_mean", ascending=False).drop_duplicates(["task", "extractor"])
    cands = []
    for t, g in per_ex.groupby("task", sort=False):
        if len(g) < 2 or (n_classes.get(t) or 0) > 40:
            continue
        cands.append((float(g["acc_mean"].max() - g["acc_mean"].min()), t))
    if not cands:
        return _absent("confusion", title,
                       "Needs a task with at least two extractors and at most 40 classes.")
    gap, task = max(cands, key=lambda c: c[0])
    g = per_ex[per_ex["task"] == task].sort_values("acc_mean", ascending=False)
    best, worst = g.iloc[0], g.iloc[-1]
    panels = []
    for which, r in (("best", best), ("worst", worst)):
        cm, classes = _confusion(ctx, r)
        if cm is None:
            return _absent("confusion", title, f"predictions.jsonl has no predictions for {r['label']} on {task}.")
        panels.append((f"{which}: {r['label']} ({pct(r['acc_mean'])} %)", cm, classes))
    fig = ctx.figure(figs.confusion_pair(task, panels), "confusion",
                     f"{task}: confusion matrices of the best and the worst extractor")
    note = (f"Task {task}: the task whose best and worst extractor (each at its best layer) differ most "
            f"({pct(gap)} points) among tasks with ≤ 40 classes. Rows: true class; columns: predicted; row-normalised counts summed over "
            f"trials (and runs).")
    return Section("confusion", title, f"<p>{esc(note)}</p>{fig.html}", f"{note}\n\n{fig.md}")


# ---------------------------------------------------------------------------------------------------------
# 110 comparability
# ---------------------------------------------------------------------------------------------------------

@register_section("comparability", order=110)
def comparability(ctx: ReportContext) -> Section:
    title = "Kept apart (comparability)"
    g = ctx.groups
    apart = g[~g["primary"]] if len(g) else g
    df = ctx.df
    notes = []
    for col, what in (("featbench_version", "featbench versions"), ("schema_version", "result-schema versions")):
        vals = sorted({str(v) for v in df[col].dropna()} - {""})
        if len(vals) > 1:
            notes.append(f"These runs mix {what} ({', '.join(vals)}); records are still ranked together because the "
                         "task, protocol and dataset_id agree, but check the changelog.")
    devs = sorted(set(df["device"]))
    if len(devs) > 1:
        notes.append(f"Records from several devices ({', '.join(devs)}) are merged: the same trial run on two "
                     "devices is averaged.")
    rule = ("Records are ranked together only when task, protocol and dataset_id all agree. For each task the "
            "group with the most records is shown in the tables above; any other group is listed here with its "
            "own ranking and the reason it is kept apart.")
    html = [f"<p>{esc(rule)}</p>"] + [f"<p class='warn'>{esc(n)}</p>" for n in notes]
    md = [rule] + [f"**Note:** {n}" for n in notes]
    if apart.empty:
        html.append("<p>Every record in these runs belongs to its task's main group: nothing kept apart.</p>")
        md.append("Every record in these runs belongs to its task's main group: nothing kept apart.")
    else:
        rows = [[r.task, r.protocol, r.dataset_id, str(r.n_records), r.why_apart] for r in apart.itertuples()]
        header = ["task", "protocol", "dataset_id", "records", "why kept apart"]
        html.append(html_table(header, rows))
        md.append(md_table(header, rows, ["l"] * 5))
        for r in apart.itertuples():
            sub = ctx.agg[(ctx.agg["task"] == r.task) & (ctx.agg["protocol"] == r.protocol)
                          & (ctx.agg["dataset_id"] == r.dataset_id)].sort_values("acc_mean", ascending=False)
            rr = [[("**" if b else "") + l + ("**" if b else ""), pm(m, s, n)]
                  for l, m, s, n, b in zip(sub["label"], sub["acc_mean"], sub["acc_std"], sub["n_trials"],
                                           sub["is_best"])]
            cap = f"{r.task} [{r.protocol}; dataset_id {r.dataset_id}], ranked on its own"
            html.append(f"<h3>{esc(cap)}</h3>" + html_table(
                ["extractor", "accuracy (%)"],
                [[f"<strong>{esc(x[0].strip('*'))}</strong>" if x[0].startswith("**") else esc(x[0]), esc(x[1])]
                 for x in rr], raw=True))
            md.append(f"#### {cap}\n\n" + md_table(["extractor", "accuracy (%)"], rr))
    return Section("comparability", title, "".join(html), "\n\n".join(md))


# ---------------------------------------------------------------------------------------------------------
# 120 skipped images and protocol notes
# ---------------------------------------------------------------------------------------------------------

@register_section("skipped", order=120)
def skipped(ctx: ReportContext) -> Section:
    title = "Skipped images and protocol notes"
    rows, notes, dropped = [], [], []
    for run in ctx.runs.runs:
        for s in run.meta.get("skipped_images", []) or []:
            rows.append([run.run_id, s.get("relpath", "?"), s.get("reason", "?")])
        for d in run.meta.get("dropped_files", []) or []:
            dropped.append([run.run_id, d.get("task", "?"), d.get("relpath", "?"), d.get("reason", "?")])
        for t, info in (run.meta.get("tasks") or {}).items():
            for n in info.get("notes") or []:
                notes.append([run.run_id, t, n])
    html, md = [], []
    if rows:
        intro = (f"{len(rows)} image(s) could not be decoded and were left out of every split they belonged to "
                 "(run with --strict to stop instead).")
        html.append(f"<p>{esc(intro)}</p>" + html_table(["run", "image", "reason"], rows))
        md.append(intro + "\n\n" + md_table(["run", "image", "reason"], rows, ["l"] * 3))
    else:
        html.append("<p>No image was skipped: every image decoded.</p>")
        md.append("No image was skipped: every image decoded.")
    if dropped:
        intro = (f"{len(dropped)} entr(y/ies) named like images were not image files and were left out when the "
                 "dataset folders were listed:")
        head = ["run", "task", "entry", "reason"]
        html.append(f"<h3>Dropped when listing</h3><p>{esc(intro)}</p>" + html_table(head, dropped))
        md.append("### Dropped when listing\n\n" + intro + "\n\n" + md_table(head, dropped, ["l"] * 4))
    if notes:
        html.append("<h3>Protocol notes</h3>" + html_table(["run", "task", "note"], notes))
        md.append("### Protocol notes\n\n" + md_table(["run", "task", "note"], notes, ["l"] * 3))
    return Section("skipped", title, "".join(html), "\n\n".join(md))


# ---------------------------------------------------------------------------------------------------------
# 130 runs and provenance
# ---------------------------------------------------------------------------------------------------------

def _weights_text(desc: dict[str, Any]) -> str:
    w = desc.get("weights")
    if not isinstance(w, dict):
        return "—"
    parts = [f"source {w.get('source', '?')}"]
    if w.get("origin"):
        parts.append(f"origin {w['origin']}")
    if w.get("path"):
        parts.append(f"file {Path(str(w['path'])).name}")
    if w.get("sha256"):
        parts.append(f"sha256 {str(w['sha256'])[:16]}…")
    return ", ".join(parts)


@register_section("runs", order=130)
def runs_section(ctx: ReportContext) -> Section:
    title = "Runs and provenance"
    html, md = [], []
    for run in ctx.runs.runs:
        m = run.meta
        mach = m.get("machine") or {}
        items = [
            ("run", run.run_id), ("folder", str(run.path)), ("status", m.get("status", "—")),
            ("started (UTC)", m.get("started", "—")), ("command", m.get("command", "—")),
            ("git commit", m.get("git_commit") or "—"), ("featbench", m.get("featbench_version", "—")),
            ("result schema", m.get("schema_version", "—")), ("seed", m.get("seed", "—")),
            ("machine", f"{mach.get('hostname', '?')}: {mach.get('cpu', '?')}, {mach.get('cpu_count', '?')} cores, "
                        f"torch threads {mach.get('torch_threads', '?')}; {mach.get('platform', '')}"),
            ("GPUs", ", ".join(mach.get("gpus") or []) or "none"),
            ("device requested", m.get("device_requested", "—")),
            ("data roots", ", ".join(m.get("data_roots") or []) or "—"),
            ("feature cache", f"{m.get('cache_dir') or 'off'}; hits {(m.get('cache') or {}).get('hits', '?')}, "
                              f"misses {(m.get('cache') or {}).get('misses', '?')}"),
        ]
        timings = m.get("timings_s") or {}
        versions = m.get("versions") or {}
        ex_rows = [[spec, str(d.get("version", "—")), json.dumps(d.get("params", {}), sort_keys=True), _weights_text(d)]
                   for spec, d in (m.get("extractors") or {}).items()]
        ds_rows = [[t, (i.get("dataset") or {}).get("name", "?"), (i.get("dataset") or {}).get("identity", "?"),
                    str((i.get("dataset") or {}).get("images", "?")), str((i.get("dataset") or {}).get("classes", "?")),
                    i.get("protocol", "?"), str(i.get("trials", "?")), str((i.get("dataset") or {}).get("root", ""))]
                   for t, i in (m.get("tasks") or {}).items()]
        html.append(f"<h3>{esc(run.run_id)}</h3><dl class='meta'>" +
                    "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>")
        md.append(f"### {run.run_id}\n\n" + "\n".join(f"- **{k}**: {v}" for k, v in items))
        if timings:
            rows = [[k, f"{v:.1f}" if isinstance(v, (int, float)) else str(v)] for k, v in timings.items()]
            html.append("<h4>Timings (s)</h4>" + html_table(["task", "seconds"], rows))
            md.append("**Timings (s)**\n\n" + md_table(["task", "seconds"], rows))
        if ds_rows:
            header = ["task", "dataset", "dataset_id", "images", "classes", "protocol", "trials", "root"]
            html.append("<h4>Tasks and datasets</h4>" + html_table(header, ds_rows))
            md.append("**Tasks and datasets**\n\n" + md_table(header, ds_rows, ["l"] * 8))
        if ex_rows:
            header = ["extractor", "version", "parameters", "weights"]
            html.append("<h4>Extractors and weights</h4>" + html_table(header, ex_rows))
            md.append("**Extractors and weights**\n\n" + md_table(header, ex_rows, ["l"] * 4))
            full = json.dumps(m.get("extractors"), indent=1, sort_keys=True, default=str)
            html.append(f"<details><summary>extractors' describe() in full</summary><pre>{esc(full)}</pre></details>")
        if versions:
            text = ", ".join(f"{k} {v}" for k, v in versions.items())
            html.append(f"<h4>Versions</h4><p class='small'>{esc(text)}</p>")
            md.append(f"**Versions**: {text}")
    return Section("runs", title, "".join(html), "\n\n".join(md))


