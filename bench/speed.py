"""``featbench speed``: images/s and per-image latency of every extractor, with a stage breakdown.

What is measured
----------------
For each extractor spec, device and batch size, on a fixed set of real images
(:func:`speed_images`: ``office_caltech10`` under the data roots when present, else another
shared dataset, else 16 photos shipped as files inside scikit-image):

``mode = e2e``
    The extractor's own pipeline from file records: one ``transform_outputs`` call on all the
    images (after ``configure_runtime(batch_size=...)``), so it reads and decodes the files
    itself: a CNN in its DataLoader workers, overlapped with the forward pass; the classical
    extractors on their thread pool. One repeat is one pass over all images.
``mode = runner``
    What :meth:`featbench.runner.Runner.extract` does: one ``transform_outputs`` call per
    chunk of ``batch_size`` records. ``batch_latency_ms_p50`` (the wait for one call) is
    measured here. (A CNN given exactly one batch prepares it in the main process, without
    DataLoader workers, so this can be much slower than ``e2e``.)
``mode = stage``
    A separate, instrumented, sequential pass per stage, each stage fed the previous stage's
    ready output: ``read`` (file bytes into memory), ``decode`` (bytes to RGB ``uint8``),
    then, per batch, ``preprocess`` (grey / resize / crop), ``transfer`` (host to device),
    ``extract`` (forward pass, or local descriptor computation) and ``encode`` (BoW / VLAD /
    Fisher encoding, or the CNN's pooling and copy back). Stage times are per image. Their sum
    is the single-threaded cost of the work; ``e2e`` can be faster (workers and threads
    overlap stages) or slower (worker start-up, Python overhead).
``mode = synthetic`` (``--synthetic``, torch extractors only)
    The model alone on a ready, normalised batch already on the device (forward + pooling),
    so every CNN row carries ``e2e_over_synthetic`` = e2e img/s / synthetic img/s, both
    measured in the same run (1.0 = the input pipeline costs nothing).

How stages are split: only through the extractor's public hooks
(:class:`featbench.features.base.Extractor`): ``speed_stages(device)`` returns an ordered dict
``{stage: fn}``: optionally ``decode`` (``fn(bytes, record) -> RGB array``, replacing the default
:func:`~featbench.datasets.images.decode_bytes`), then any of ``preprocess``, ``transfer``,
``extract``, ``encode``, each ``fn`` mapping the previous stage's batch output to its own (the
first gets a list of RGB arrays). hog, the local-descriptor encodings and cnn provide it; an
extractor whose hook returns None is timed as one ``extract`` stage (``stage_source = whole``).
Likewise ``speed_synthetic(device, batch_size, images)`` returns a no-argument callable that runs
one forward pass on a prepared on-device batch (cnn), or None.

Timing: ``time.perf_counter`` around each step after ``warmup`` untimed passes; on CUDA
every timed step ends with ``torch.cuda.synchronize()`` and the synthetic forward pass is
timed with CUDA events. Latency is per image (ms): median and interquartile range over the
``repeats`` passes; ``img_per_s = 1000 / latency_ms_p50``. ``batch_latency_ms_p50`` is the
median wall time of one ``transform_outputs`` call (what a caller waits for a batch).

Learned extractors (``learns = True``) are fitted once per run on ``fit_images`` other images
of the same set (not timed as extraction; ``fit_s`` reports it). Extractors that do not use
torch are measured on the CPU only (``note`` says so when other devices were asked for);
they are measured at every batch size, which for them only sets how many images one
``transform_outputs`` call gets (the classical ones spread a call's images over threads).
When the fit images overlap the timed ones (a small pool), one extra untimed pass runs after
``fit`` so that descriptors memoised during ``fit`` are not counted as free. File reads come
from the page cache after the warm-up pass: ``read_ms`` is the syscall and copy cost, not the
disk's.

Outputs (``--out``): ``speed.csv`` and ``speed.json`` (``meta``: provenance snapshot, machine
fingerprint, thread settings, settings, the image list; ``rows``: every row; ``records``: the
e2e rows with a ``hardware`` string), ``speed.html``/``speed.md``
(:mod:`featbench.reports.speed_page`), and one line appended to the history
(:mod:`featbench.speed_history`). Columns (:data:`SPEED_COLUMNS`): the key ``extractor``,
``device``, ``batch_size``, ``mode``, ``dataset``; ``img_per_s``, ``latency_ms_p50``,
``latency_ms_iqr`` (per image), ``batch_latency_ms_p50`` (runner rows); ``read_ms`` ..
``encode_ms`` and ``stage_total_ms`` (their sum; stage rows, per image; ``transfer_ms`` is 0
on the CPU; an empty cell means the stage does not exist or was not measured);
``e2e_over_synthetic``; ``fit_s``/``fit_images``; ``torch_threads``, ``cv2_threads``,
``omp_num_threads``, ``num_workers``; ``git_commit``, ``machine_fingerprint``; ``note``, ``error``.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from featbench import speed_history as sh
from featbench.datasets.folder import ImageRecord
from featbench.errors import FeatbenchError
from featbench.features.base import available, create, example_specs, reads_pixels, split_specs
from featbench.provenance import snapshot
from featbench.records import json_default
from featbench.reports.speed_page import write_speed_page
from featbench.speed_images import speed_images  # noqa: F401  (public here)
from featbench.speed_measure import (STAGE_COLUMNS, STAGES, is_cuda, measure_e2e, measure_stages,  # noqa: F401
                                     measure_synthetic, stage_plan, threads_info)

SPEED_COLUMNS = (
    "extractor", "family", "device", "batch_size", "mode", "dataset", "n_images", "repeats", "warmup",
    "img_per_s", "latency_ms_p50", "latency_ms_iqr", "batch_latency_ms_p50",
    *STAGE_COLUMNS, "stage_total_ms", "stage_source", "e2e_over_synthetic",
    "fit_s", "fit_images", "torch_threads", "cv2_threads", "omp_num_threads", "num_workers",
    "git_commit", "machine_fingerprint", "note", "error",
)


# ----------------------------------------------------------------------------- measurements

@dataclasses.dataclass
class SpeedSettings:
    batch_sizes: list[int]
    devices: list[str]
    n_images: int = 16
    repeats: int = 5
    warmup: int = 1
    synthetic: bool = False
    fit_images: int = 16
    num_workers: int | None = None
    threads: int | None = None
    seed: int = 0


def _base_row(spec: str, ex: Any, device: str, bs: int, mode: str, dataset: str, n: int,
              s: SpeedSettings) -> dict[str, Any]:
    row: dict[str, Any] = {c: float("nan") for c in SPEED_COLUMNS}
    th = threads_info()
    row.update(extractor=spec, family=getattr(ex, "family", ""), device=device, batch_size=bs, mode=mode,
               dataset=dataset, n_images=n, repeats=s.repeats, warmup=s.warmup, stage_source="",
               fit_images=0, torch_threads=th["torch_threads"], cv2_threads=th["cv2_threads"],
               omp_num_threads=th["OMP_NUM_THREADS"], num_workers=getattr(ex, "num_workers", None),
               git_commit="", machine_fingerprint="", note="", error="")
    return row


def _fit(ex: Any, fit_records: Sequence[ImageRecord], seed: int) -> tuple[float, int]:
    if not getattr(ex, "learns", False):
        return float("nan"), 0
    t0 = time.perf_counter()
    ex.fit(list(fit_records), [r.label for r in fit_records], image_ids=[r.uid for r in fit_records], seed=seed)
    return time.perf_counter() - t0, len(fit_records)


def measure_extractor(spec: str, records: Sequence[ImageRecord], fit_records: Sequence[ImageRecord],
                      dataset: str, s: SpeedSettings, log: Callable[[str], None] = lambda m: None
                      ) -> list[dict[str, Any]]:
    """Every row for one extractor spec: per device and batch size, e2e + stage (+ synthetic)."""
    rows: list[dict[str, Any]] = []
    n = len(records)
    try:
        ex = create(spec)
    except Exception as exc:
        row = _base_row(spec, None, s.devices[0], max(s.batch_sizes), "e2e", dataset, n, s)
        row["error"] = f"{type(exc).__name__}: {exc}"
        return [row]
    uses_torch = bool(getattr(ex, "uses_torch", False))
    devices = s.devices if uses_torch else ["cpu"]
    batch_sizes = s.batch_sizes
    note = "" if uses_torch or devices == s.devices else "no torch: measured on the CPU only"
    fit_s, n_fit = float("nan"), 0
    fitted = False
    for device in devices:
        for bs in batch_sizes:
            def row_for(mode: str) -> dict[str, Any]:
                r = _base_row(spec, ex, device, bs, mode, dataset, n, s)
                r.update(fit_s=fit_s, fit_images=n_fit, note=note)
                return r
            try:
                ex.configure_runtime(device=device, batch_size=bs, num_workers=s.num_workers, threads=s.threads)
                if not fitted:
                    fit_s, n_fit = _fit(ex, fit_records, s.seed)
                    fitted = True
                    if n_fit:
                        log(f"  {spec}: fitted on {n_fit} images in {fit_s:.2f} s (not timed as extraction)")
                        if {r.uid for r in fit_records} & {r.uid for r in records}:
                            ex.transform_outputs(list(records))  # drain what fit memoised
                e2e = row_for("e2e")
                e2e.update(measure_e2e(ex, records, device, bs, s.repeats, s.warmup))
                runner = row_for("runner")
                runner.update(measure_e2e(ex, records, device, bs, s.repeats, s.warmup, chunked=True))
                stage = row_for("stage")
                stage.update(measure_stages(ex, records, device, bs, s.repeats, s.warmup))
                group = [e2e, runner, stage]
                for r in group:
                    r["num_workers"] = getattr(ex, "num_workers", r["num_workers"])
                if s.synthetic and uses_torch:
                    try:
                        syn = measure_synthetic(ex, records, device, bs, s.repeats, s.warmup)
                        why = "no synthetic hook" if syn is None else ""
                    except Exception as exc:  # keep the rows already measured
                        syn, why = None, f"synthetic failed: {type(exc).__name__}: {exc}"
                        log(f"  {spec}: {why}")
                    if syn is None:
                        e2e["note"] = (e2e["note"] + "; " if e2e["note"] else "") + why
                    else:
                        srow = row_for("synthetic")
                        srow.update(syn)
                        ratio = e2e["img_per_s"] / srow["img_per_s"] if srow["img_per_s"] > 0 else float("nan")
                        for r in (*group, srow):
                            r["e2e_over_synthetic"] = ratio
                        group.append(srow)
                rows += group
                for r in group:
                    log(f"  {spec:30s} {device:5s} bs={bs:<3d} {r['mode']:9s} {r['img_per_s']:9.2f} img/s  "
                        f"p50 {r['latency_ms_p50']:8.2f} ms/img  IQR {r['latency_ms_iqr']:6.2f}")
            except Exception as exc:  # one broken extractor must not end the whole measurement
                r = row_for("e2e")
                r["error"] = f"{type(exc).__name__}: {exc}"
                rows.append(r)
                log(f"  {spec}: {device} bs={bs}: FAILED: {r['error']}")
                if not fitted:
                    break
    return rows


# ----------------------------------------------------------------------------- the command

def default_specs() -> list[str]:
    """A spec per registered extractor (its registered examples: several for ``cnn``): what
    ``featbench speed`` measures when ``--extractors`` is not given."""
    return [spec for name in available() for spec in example_specs(name) if reads_pixels(name)]


def resolve_devices(device: str, log: Callable[[str], None]) -> list[str]:
    import torch

    device = device.strip().lower()
    if device == "all":
        if torch.cuda.is_available():
            return ["cpu", "cuda"]
        log("cuda skipped: torch.cuda.is_available() is False on this machine (measuring cpu only)")
        return ["cpu"]
    if device == "auto":
        return ["cuda" if torch.cuda.is_available() else "cpu"]
    if is_cuda(device):
        if not torch.cuda.is_available():
            raise FeatbenchError(f"--device {device}: CUDA is not available here "
                                 "(torch.cuda.is_available() is False); use --device cpu or all")
        return [device]
    if device != "cpu":
        raise FeatbenchError(f"--device {device}: expected cpu, cuda, cuda:N, all or auto")
    return ["cpu"]


def parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise FeatbenchError(f"--batch-sizes {text!r}: expected comma-separated integers such as 1,32") from None
    if not sizes or any(b < 1 for b in sizes):
        raise FeatbenchError(f"--batch-sizes {text!r}: expected positive integers such as 1,32")
    return sorted(set(sizes))


def _clean(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_outputs(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any],
                  comparison: dict[str, Any] | None = None) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "speed.csv", out / "speed.json"
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(SPEED_COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if _clean(r.get(k)) is None else _clean(r.get(k))) for k in SPEED_COLUMNS})
    clean = [{k: _clean(r.get(k)) for k in SPEED_COLUMNS} for r in rows]
    machine = meta.get("machine") or {}
    gpus = machine.get("gpus") or []

    def hardware(device: str) -> str:
        return (gpus[0] if gpus else "GPU") if is_cuda(device) else str(machine.get("cpu", ""))

    # "rows": every mode; "records": the e2e rows only (one per extractor x device x batch size),
    # the headline figure for report code that reads speed.json records (reports/sections.py).
    doc = {"meta": meta, "columns": list(SPEED_COLUMNS), "rows": clean,
           "records": [dict(r, hardware=hardware(str(r["device"]))) for r in clean
                       if r["mode"] == "e2e" and not r["error"] and r["img_per_s"] is not None]}
    if comparison is not None:
        doc["comparison"] = comparison
    json_path.write_text(json.dumps(doc, indent=1, default=json_default))
    return csv_path, json_path


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    head = (f"{'extractor':32s} {'device':6s} {'bs':>3s} {'mode':9s} {'img/s':>9s} {'ms/img':>8s} {'IQR':>6s} "
            f"{'read':>6s} {'decode':>6s} {'prep':>6s} {'xfer':>6s} {'extract':>8s} {'encode':>6s} {'e2e/syn':>7s}")
    lines = [head, "-" * len(head)]

    def f(v: Any, w: int, p: int = 2) -> str:
        return f"{v:{w}.{p}f}" if isinstance(v, (int, float)) and math.isfinite(v) else f"{'-':>{w}s}"

    for r in rows:
        if r.get("error"):
            lines.append(f"{r['extractor'][:32]:32s} {r['device']:6s} {r['batch_size']:>3} ERROR {r['error'][:80]}")
            continue
        lines.append(f"{r['extractor'][:32]:32s} {r['device']:6s} {r['batch_size']:>3} {r['mode']:9s} "
                     f"{f(r['img_per_s'], 9)} {f(r['latency_ms_p50'], 8)} {f(r['latency_ms_iqr'], 6)} "
                     f"{f(r['read_ms'], 6)} {f(r['decode_ms'], 6)} {f(r['preprocess_ms'], 6)} "
                     f"{f(r['transfer_ms'], 6)} {f(r['extract_ms'], 8)} {f(r['encode_ms'], 6)} "
                     f"{f(r['e2e_over_synthetic'], 7)}")
    return "\n".join(lines)


def speed_command(extractors: str | None = None, device: str = "cpu", batch_sizes: str = "1,32",
                  images: int = 16, out: Path | str = Path("featbench-speed"), repeats: int = 5, warmup: int = 1,
                  data_root: str | None = None, dataset: str | None = None, synthetic: bool = False,
                  compare: str | None = None, threshold: float = 0.2, history: Path | str | None = None,
                  record: bool = True, fit_images: int = 16, workers: int | None = None,
                  threads: int | None = None, page: bool = True, results: str | None = None,
                  quiet: bool = False, command: list[str] | None = None,
                  echo: Callable[[str], None] | None = None) -> int:
    """Measure, write ``speed.csv``/``speed.json``, append to the history, compare; the exit code.

    0: measured (and no regression); 1: a regression past ``threshold`` against ``compare``,
    or every measurement failed. Usage errors raise :class:`FeatbenchError` (the CLI's exit 2),
    and so does a named baseline (commit or file) with no rows from this machine. ``compare=last``
    with no earlier run from this machine says so and returns 0 (a first run is no regression).
    ``results`` (a run folder or results.csv) adds the accuracy-speed plot to ``speed.html``.
    """

    echo = echo or (lambda m: print(m, flush=True))
    log = (lambda m: None) if quiet else echo
    if images < 1 or repeats < 1 or warmup < 0:
        raise FeatbenchError("--images and --repeats must be at least 1, --warmup at least 0")
    if not 0 < threshold < 1:
        raise FeatbenchError(f"--threshold must be a fraction between 0 and 1 (0.2 = 20 % slower); got {threshold}")
    if results and not Path(results).expanduser().exists():
        raise FeatbenchError(f"--results: no such file or run folder: {results}")
    specs = list(dict.fromkeys(split_specs(extractors) or default_specs()))
    sizes = parse_batch_sizes(batch_sizes)
    devices = resolve_devices(device, echo)
    if data_root:
        roots = [r for r in str(data_root).split(os.pathsep) if r]
        for r in roots:
            if not Path(r).expanduser().is_dir():
                raise FeatbenchError(f"--data-root: no such folder: {r}")
    elif dataset == "skimage":
        roots = []  # (and no need to import the runner and scikit-learn)
    else:
        from featbench.runner import default_data_roots

        roots = default_data_roots()
    history_path = Path(history).expanduser() if history else sh.default_history_path()
    history_records = sh.load(history_path)  # read before this run appends to it
    ds_name, timed, fit_records = speed_images(images, roots, dataset, n_fit=fit_images)
    if threads:
        import torch

        torch.set_num_threads(threads)
    settings = SpeedSettings(batch_sizes=sizes, devices=devices, n_images=len(timed), repeats=repeats,
                             warmup=warmup, synthetic=synthetic, fit_images=fit_images, num_workers=workers,
                             threads=threads)
    meta = snapshot(command if command is not None else ["featbench", *sys.argv[1:]])
    fp = sh.fingerprint(meta["machine"])
    meta.update(machine_fingerprint=fp, machine_identity=sh.machine_identity(meta["machine"]),
                threads=threads_info(), settings=dataclasses.asdict(settings), extractors=specs,
                dataset={"name": ds_name, "images": len(timed), "fit_images": len(fit_records),
                         "relpaths": [r.relpath for r in timed]})
    log(f"featbench speed: {len(specs)} extractor(s) x {devices} x batch {sizes} on {len(timed)} images "
        f"of {ds_name}; {warmup} warm-up + {repeats} timed pass(es); machine {fp}")
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for spec in specs:
        log(f"{spec}:")
        rows += measure_extractor(spec, timed, fit_records, ds_name, settings, log)
    for r in rows:
        r["git_commit"] = meta.get("git_commit") or ""
        r["machine_fingerprint"] = fp
    meta["threads_after"] = threads_info()
    meta["wall_s"] = round(time.perf_counter() - t_start, 2)

    comparison = None
    code = 0
    if compare:
        base = sh.resolve_baseline(compare, history_records, fp)
        cmp = sh.compare(rows, base, threshold)
        comparison = {"baseline": cmp.baseline, "threshold": threshold, "message": cmp.message,
                      "rows": cmp.rows, "regressions": len(cmp.regressions)}
    out = Path(out)
    csv_path, json_path = write_outputs(out, rows, meta, comparison)
    if record:
        sh.append(history_path, sh.make_record(rows, meta))
    page_path = None
    if page:
        try:
            page_path = write_speed_page(json_path, out, history=sh.load(history_path), results=results)
        except Exception as exc:  # the measurements are written; a plotting problem must not hide them
            echo(f"speed page not written: {type(exc).__name__}: {exc}")
    echo(format_table(rows))
    echo(f"speed: {csv_path}\n       {json_path}" + (f"\npage:  {page_path}" if page_path else "")
         + (f"\nhistory: {history_path} (appended)" if record else ""))
    failed = [r for r in rows if r.get("error")]
    if failed:
        echo(f"{len(failed)} measurement(s) failed: " + "; ".join(f"{r['extractor']} ({r['error'][:120]})" for r in failed))
        if len(failed) == len(rows):
            code = 1
    if compare:
        echo(cmp.format())
        if base.missing and not cmp.rows:
            raise FeatbenchError(base.message)
        if cmp.regressions:
            code = 1
    return code
