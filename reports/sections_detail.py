"""Report sections in detail: domain matrices, t-SNE embedding, confusion matrices, comparability,
skipped images, runs and provenance."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featbench.atomic import atomic_write_with

from . import embedding as emb
from . import figures as figs
from .section_api import ReportContext, Section, absent, register_section
from .tables import esc, html_table, is_domain_task, md_table, parse_domain_task, pct, pm, strip_layers


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
    """Source × target accuracy matrices for the domain shifts."""
    title = "Domain adaptation: source × target"
    mats = domain_matrices(ctx.agg)
    if not mats:
        return absent("domain", title, "No domain-shift task (named DATASET:SOURCE->TARGET) in these runs.")
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
    """t-SNE of one task's features by class (from the run's features-sample/)."""
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
        return absent("embedding", title, "No 2-D embedding: " + "; ".join(reasons) + ".")
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
    """Confusion matrices of the best and the worst extractor."""
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
        return absent("confusion", title,
                       "Needs a task with at least two extractors and at most 40 classes.")
    gap, task = max(cands, key=lambda c: c[0])
    g = per_ex[per_ex["task"] == task].sort_values("acc_mean", ascending=False)
    best, worst = g.iloc[0], g.iloc[-1]
    panels = []
    for which, r in (("best", best), ("worst", worst)):
        cm, classes = _confusion(ctx, r)
        if cm is None:
            return absent("confusion", title, f"predictions.jsonl has no predictions for {r['label']} on {task}.")
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
    """Which records were kept apart and why (task, protocol, dataset identity)."""
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
    rule = ("Records are ranked together only when task, protocol and dataset_id all agree, and the classifiers "
            "are of one kind (linear probes apart from 1-NN). For each task the "
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
                          & (ctx.agg["dataset_id"] == r.dataset_id)
                          & (ctx.agg["classifier_kind"] == r.classifier_kind)].sort_values("acc_mean", ascending=False)
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
    """Images left out (unreadable), entries dropped when listing, and the protocols' notes."""
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
    """Runs and provenance: commands, commits, machines, versions, weights."""
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
