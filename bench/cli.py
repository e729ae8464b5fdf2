"""The ``featbench`` command line (typer).

Every user error (missing data root, unknown task or extractor, malformed suite, an option
with a wrong value, an output that cannot be written) is printed as one line naming the
problem and exits with code 2, with no traceback. Ctrl-C exits 130 and SIGTERM 143, each with
one line (run.json then says ``failed`` with the reason). Anything else is a bug in featbench:
its traceback is shown, followed by a line asking to report it.
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, List, Optional

import typer
from typer.core import TyperGroup

from featbench.errors import FeatbenchError

#: click's base of usage errors (typer >= 0.20 vendors click, so take it from typer's own class)
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

BUG_LINE = ("featbench: this is a bug in featbench, not a problem with your input: please report it "
            "(the command line and the traceback above) to the featbench maintainers")


class OneLineErrors(TyperGroup):
    """The root command: a usage error (unknown option, a value of the wrong type or range) is one
    line and exit 2, instead of click's usage block; an unexpected exception shows its traceback
    and :data:`BUG_LINE`."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
        except ClickException as exc:
            sub = exc.ctx.command_path.split(" ", 1)[1:] if getattr(exc, "ctx", None) else []
            where = " (see 'featbench " + "".join(w + " " for w in sub) + "--help')"
            message = "; ".join(l.strip() for l in exc.format_message().splitlines() if l.strip())
            typer.echo(f"featbench: error: {message}{where}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("featbench: aborted", err=True)
            sys.exit(1)
        except Exception:
            traceback.print_exc()
            typer.echo(BUG_LINE, err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="Benchmark ImageNet CNN layer features against classical descriptors.")
cache_app = typer.Typer(help="Inspect or clear the feature cache (and the evaluations kept beside it).", pretty_exceptions_enable=False)
app.add_typer(cache_app, name="cache")
results_app = typer.Typer(help="The committed results corpus (results/*.jsonl) and RESULTS.md.",
                          pretty_exceptions_enable=False)
app.add_typer(results_app, name="results")
published_app = typer.Typer(help="Published feature files and image subsets (datasets/published_sources.toml): list and stage them.",
                            pretty_exceptions_enable=False)
app.add_typer(published_app, name="published")


def user_errors(fn: Callable) -> Callable:
    """FeatbenchError -> one line, exit 2; a write the disk refused -> one line, exit 2; Ctrl-C -> 130;
    SIGTERM -> 143."""
    from featbench.atomic import WRITE_ERRNOS, write_failure
    from featbench.run_folder import TerminatedBySignal

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FeatbenchError as exc:
            typer.echo(f"featbench: error: {exc}", err=True)
            raise typer.Exit(2)
        except OSError as exc:  # the disk refused a write (full, size limit, read-only): not a bug
            if exc.errno not in WRITE_ERRNOS:
                raise
            typer.echo(f"featbench: error: {write_failure(exc.filename or 'an output file', exc)}", err=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            typer.echo("featbench: interrupted", err=True)
            raise typer.Exit(130)
        except TerminatedBySignal:
            typer.echo("featbench: terminated (SIGTERM)", err=True)
            raise typer.Exit(143)
    return wrapper


def _split(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _nonempty(option: str, values: Optional[list[str]], what: str) -> Optional[list[str]]:
    """A list option that was given must name something (``--tasks ,`` names nothing)."""
    if values is not None and not values:
        raise FeatbenchError(f"{option}: no {what} named")
    return values


DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


def _check_device(value: str, extra: str = "") -> str:
    import re

    if not re.fullmatch(DEVICE_PATTERN + (f"|{extra}" if extra else ""), value):
        raise FeatbenchError(f"--device: '{value}' is not a device; use auto, cpu, cuda or cuda:N"
                             + (f" or {extra}" if extra else ""))
    return value


def _cache_dir(value: Optional[str]) -> Optional[str]:
    if value and Path(value).expanduser().exists() and not Path(value).expanduser().is_dir():
        raise FeatbenchError(f"--cache-dir {value}: exists and is not a folder")
    return value


def _data_roots(value: Optional[str], suite_root: Optional[str]) -> list[str]:
    from featbench.runner import default_data_roots

    if value:
        roots = [r for r in value.split(os.pathsep) if r]
        for r in roots:
            if not Path(r).expanduser().is_dir():
                raise FeatbenchError(f"--data-root: no such folder: {r}")
        return roots
    return ([suite_root] if suite_root else []) + default_data_roots()


@app.command()
@user_errors
def run(
    suite: Optional[str] = typer.Argument(None, help="Suite TOML file or shipped suite name (default: the embedded quick suite)."),
    tasks: Optional[str] = typer.Option(None, help="Comma-separated tasks, replacing the suite's (e.g. office_caltech10:amazon->webcam)."),
    extractors: Optional[str] = typer.Option(None, help="Extractor specs separated by commas or ';', replacing the suite's (hog:size=64,cell=8 stays one spec)."),
    classifiers: Optional[str] = typer.Option(None, help="Comma-separated: logreg, svm, 1nn, finetune-head, finetune-all (the last two fine-tune cnn: extractors; recipe options as in finetune-head:bn=train,epochs=5)."),
    trials: Optional[int] = typer.Option(None, min=1, help="Trials per task (fixed splits always run once)."),
    seed: Optional[int] = typer.Option(None, help="Base seed (trial t uses seed + t)."),
    data_root: Optional[str] = typer.Option(None, help="Folder(s) holding datasets, separated by ':'."),
    out: Path = typer.Option(Path("featbench-out"), help="Output folder."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N (CNN extractors)."),
    strict: bool = typer.Option(False, help="Stop at the first unreadable image instead of skipping it."),
    quiet: bool = typer.Option(False, help="No progress bars or per-result lines."),
    cache_dir: Optional[str] = typer.Option(None, help="Feature cache folder (default $FEATBENCH_CACHE or ~/.cache/featbench)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the feature cache (nor the evaluation cache beside it)."),
    batch_size: int = typer.Option(32, min=1, help="Images per extraction batch."),
    workers: Optional[int] = typer.Option(None, min=0, help="DataLoader workers for CNN decoding (default: from the cores available, README 'Speed'; up to 8 on a GPU)."),
    threads: Optional[int] = typer.Option(None, min=1, help="Torch intra-op threads (CNN default: from the cores available, README 'Speed')."),
    verify: bool = typer.Option(False, help="Check every image's sha256 against MANIFEST.tsv first."),
    report: bool = typer.Option(True, help="Write report.md / report.html at the end."),
    solver: str = typer.Option("torch", help="Classifier solver: torch (featbench.probe, the default: Newton run to --tol, CPU or CUDA per --device) or sklearn (lbfgs/liblinear, what corpus records before the torch default were fitted with, and the converged reference with --tol 1e-8)."),
    tol: Optional[float] = typer.Option(None, min=0.0, help="Solver tolerance (torch: largest absolute gradient entry of C*sum(loss)+0.5|W|^2, default 1e-4; sklearn: its own tol, default 1e-4)."),
    max_iter: Optional[int] = typer.Option(None, min=1, help="Iteration cap per fit (default: torch 200 Newton iterations; sklearn 1000 logreg, 5000 svm)."),
    executor: Optional[str] = typer.Option(None, help="Where extraction runs: local (default) or ray."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster to use with --executor ray (HOST:PORT or 'auto'; default: start one on this machine)."),
    ray_workers: Optional[int] = typer.Option(None, help="Ray actors per extractor (default: one per GPU for CNNs where the cluster has GPUs, else one per CPU)."),
) -> None:
    """Run a suite: extract features, fit the linear classifier, write results and a report."""
    from featbench.runner import RunOptions, Runner
    from featbench.suite import TaskSpec, load_suite

    _check_device(device)
    _cache_dir(cache_dir)
    s = load_suite(suite)
    if tasks is not None:
        _nonempty("--tasks", _split(tasks) or [], "task")
        known = {t.name: t for t in s.tasks}
        s.tasks = [known.get(name, TaskSpec(name=name)) for name in _split(tasks)]
    from featbench.features.base import split_specs  # --classifiers too: not only under --extractors

    if extractors is not None:
        s.extractors = _nonempty("--extractors", split_specs(extractors), "extractor")
    if classifiers is not None:
        s.classifiers = _nonempty("--classifiers", split_specs(classifiers), "classifier")
    if trials:
        s.trials = trials
        for t in s.tasks:
            t.trials = trials
    if seed is not None:
        s.seed = seed
    options = RunOptions(out=out, data_roots=_data_roots(data_root, s.data_root), device=device, strict=strict,
                         quiet=quiet, cache_dir=cache_dir, use_cache=not no_cache, batch_size=batch_size,
                         num_workers=workers, threads=threads, verify=verify, report=report,
                         solver=solver, tol=tol, max_iter=max_iter,
                         executor=executor or s.executor or "local", ray_address=ray_address or s.ray_address,
                         ray_workers=ray_workers if ray_workers is not None else s.ray_workers)
    runner = Runner(s, options, command=["featbench", *sys.argv[1:]])
    out_dir = runner.run()  # writes the report too (unless --no-report) before saying 'complete'
    typer.echo(f"results: {out_dir / 'results.csv'}" + (f"\nreport:  {out_dir / 'report.html'}" if report else ""))


@app.command("report")
@user_errors
def report_cmd(
    run_dirs: List[Path] = typer.Argument(..., help="One or more run folders (each with results.csv and run.json)."),
    out: Path = typer.Option(..., help="Folder for report.html, report.md, tables."),
) -> None:
    """Build one report from one or more runs (e.g. a CPU run and a GPU run)."""
    from featbench.reports import build_report
    from featbench.run_folder import prepare_out_dir

    for d in run_dirs:
        if not d.is_dir():
            raise FeatbenchError(f"{d}: no such run folder")
    prepare_out_dir(out)
    path = build_report(run_dirs, out)
    typer.echo(f"report: {path}")


#: ``featbench list KIND`` -> (module, registry); imported when asked for (the report code is slow to import)
REGISTRIES = {"extractors": ("featbench.features.base", "EXTRACTORS"),
              "protocols": ("featbench.datasets.protocols", "PROTOCOLS"),
              "classifiers": ("featbench.classifier", "CLASSIFIERS"),
              "finetuning": ("featbench.finetune", "FINETUNING"),
              "methods": ("featbench.adaptation", "METHODS"),
              "sections": ("featbench.reports.sections", "SECTIONS"),
              "layouts": ("featbench.datasets.readers", "LAYOUTS")}
LISTABLE = [*REGISTRIES, "tasks", "suites"]


@app.command("list")
@user_errors
def list_cmd(what: str = typer.Argument("extractors", help=f"one of: {', '.join(LISTABLE)}"),
             data_root: Optional[str] = typer.Option(None, help="Folder(s) holding datasets, separated by ':'.")) -> None:
    """List what is registered (extractors, protocols, classifiers, methods, sections, layouts), the
    available tasks or the shipped suites."""
    if what in REGISTRIES:
        module, attr = REGISTRIES[what]
        for name, summary in getattr(importlib.import_module(module), attr).summaries().items():
            typer.echo(f"{name:22s} {summary}")
    elif what == "suites":
        from featbench.suite import load_suite, shipped_suites

        for name, path in sorted(shipped_suites().items()):
            typer.echo(f"{name:16s} {load_suite(str(path)).description}")
    elif what == "tasks":
        from featbench.datasets.tasks import available_tasks

        for name, info in available_tasks(_data_roots(data_root, None)):
            typer.echo(f"{name:40s} {info}")
    else:
        raise FeatbenchError(f"featbench list: unknown '{what}'; choose {', '.join(LISTABLE)}")


@app.command("synth-data")
@user_errors
def synth_data(out: Path = typer.Argument(..., help="Folder to create (OUT/train|test/<class>/<n>.jpg + MANIFEST.tsv)."),
               images: int = typer.Option(1000, min=1, help="Images in all (split over the classes)."),
               classes: int = typer.Option(10, min=2, help="Number of classes."),
               size: int = typer.Option(64, help="Side of the square images in pixels."),
               seed: int = typer.Option(0, help="Same seed, same bytes."),
               train_fraction: float = typer.Option(0.75, min=0.01, max=0.99, help="Share of each class in train/."),
               quiet: bool = typer.Option(False, help="No progress bar.")) -> None:
    """Write a seeded synthetic image dataset of any size (for measuring scale)."""
    from tqdm.auto import tqdm

    from featbench.synth import write_synthetic_dataset

    with tqdm(total=images, unit="img", disable=quiet, leave=False) as bar:
        path = write_synthetic_dataset(out, images, classes, size, seed, train_fraction, progress=bar.update)
    typer.echo(f"wrote {images} images in {classes} classes to {path}")


@cache_app.command("info")
@user_errors
def cache_info(cache_dir: Optional[str] = typer.Option(None, help="Cache folder.")) -> None:
    """Where the cache is and what it holds."""
    from featbench.cache import EVALUATIONS_DIR, FeatureCache
    from featbench.evaluation_cache import EvaluationCache

    cache = FeatureCache(_cache_dir(cache_dir))
    typer.echo(f"cache: {cache.root}")
    total = 0
    for row in cache.stats():
        total += row["bytes"]
        meta = row["meta"]
        spec = (meta.get("extractor") or {}).get("spec", "?") if isinstance(meta.get("extractor"), dict) else "?"
        legacy = f" + {row['legacy_files']} per-image files (cache migrate)" if row["legacy_files"] else ""
        orphans = f", {row['orphans']} orphan chunk(s)" if row["orphans"] else ""
        typer.echo(f"  {row['name']}  {row['entries']:8d} images in {row['chunks']:5d} chunks{legacy}{orphans} "
                   f"{row['bytes'] / 1e6:9.1f} MB  {spec} {meta.get('output') or ''}{meta.get('damaged') or ''}")
    n_evaluations, size = EvaluationCache(cache.root / EVALUATIONS_DIR).stored()
    if n_evaluations:
        total += size
        typer.echo(f"  {EVALUATIONS_DIR}/  {n_evaluations} classifier evaluations  {size / 1e6:.1f} MB")
    typer.echo(f"total {total / 1e6:.1f} MB")


@cache_app.command("migrate")
@user_errors
def cache_migrate(cache_dir: Optional[str] = typer.Option(None, help="Cache folder.")) -> None:
    """Move per-image .npy files of the old cache layout into the chunked store."""
    from featbench.cache import FeatureCache

    cache = FeatureCache(cache_dir)
    moved = cache.migrate()
    typer.echo(f"migrated {moved} feature vector(s) into {cache.root}")
    if cache.warning:
        raise typer.Exit(1)


@cache_app.command("clear")
@user_errors
def cache_clear(cache_dir: Optional[str] = typer.Option(None, help="Cache folder.")) -> None:
    """Delete every cached feature and classifier evaluation."""
    from featbench.cache import FeatureCache

    cache = FeatureCache(_cache_dir(cache_dir))
    cache.clear()
    typer.echo(f"cleared {cache.root}")


@app.command("speed")
@user_errors
def speed_cmd(
    extractors: Optional[str] = typer.Option(None, help="Extractor specs separated by commas or ';' (default: every registered extractor; cnn as tf_efficientnet_lite0 and squeezenet1_0)."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N, or all (cpu, plus cuda when available)."),
    batch_sizes: str = typer.Option("1,32", help="Comma-separated batch sizes."),
    images: int = typer.Option(16, min=1, help="Images per timed pass."),
    out: Path = typer.Option(Path("featbench-speed"), help="Folder for speed.csv, speed.json, speed.html, speed.md."),
    repeats: int = typer.Option(5, min=1, help="Timed passes (median and IQR over them)."),
    warmup: int = typer.Option(1, min=0, help="Untimed passes before them."),
    data_root: Optional[str] = typer.Option(None, help="Folder(s) holding datasets, separated by ':'."),
    dataset: Optional[str] = typer.Option(None, help="Dataset name under the data roots, a dataset folder, or 'skimage' (default: office_caltech10, else a shared mini dataset, else scikit-image's photos)."),
    synthetic: bool = typer.Option(False, "--synthetic", help="Also time the model alone on ready tensors (CNNs); adds e2e_over_synthetic."),
    compare: Optional[str] = typer.Option(None, help="Baseline: 'last', a git commit prefix in the history, or a speed.json; exit 1 past --threshold."),
    threshold: float = typer.Option(0.2, help="Regression threshold, a fraction (0.2: 20 % fewer images/s than the baseline)."),
    history: Optional[Path] = typer.Option(None, help="History file (default $FEATBENCH_SPEED_HISTORY, else ~/.local/share/featbench/speed-history.jsonl)."),
    record: bool = typer.Option(True, "--record/--no-record", help="Append this run to the history."),
    fit_images: int = typer.Option(16, min=1, help="Images learned extractors are fitted on first (timed apart, as fit_s)."),
    workers: Optional[int] = typer.Option(None, min=0, help="DataLoader workers for CNN decoding (default: from the cores available, README 'Speed')."),
    threads: Optional[int] = typer.Option(None, min=1, help="Torch intra-op threads (CNN default: from the cores available, README 'Speed')."),
    results: Optional[str] = typer.Option(None, help="A run folder or results.csv: adds accuracy vs speed to speed.html."),
    page: bool = typer.Option(True, "--page/--no-page", help="Write speed.html and speed.md."),
    quiet: bool = typer.Option(False, help="Print only the final table."),
) -> None:
    """Time extractors: images/s, per-image latency, stage breakdown; compare with earlier runs."""
    from featbench.run_folder import check_out_dir
    from featbench.speed import speed_command

    _check_device(device, extra="all")
    check_out_dir(out)
    if extractors:  # every spec parses and names a registered extractor, before anything is timed
        from featbench.features import create
        from featbench.features.base import split_specs

        for spec in _nonempty("--extractors", split_specs(extractors), "extractor"):
            create(spec)
    code = speed_command(extractors=extractors, device=device, batch_sizes=batch_sizes, images=images, out=out,
                         repeats=repeats, warmup=warmup, data_root=data_root, dataset=dataset, synthetic=synthetic,
                         compare=compare, threshold=threshold, history=history, record=record,
                         fit_images=fit_images, workers=workers, threads=threads, page=page, results=results,
                         quiet=quiet, command=["featbench", *sys.argv[1:]], echo=typer.echo)
    raise typer.Exit(code)


@app.command("probe-bench")
@user_errors
def probe_bench_cmd(
    rows: str = typer.Option("10000,100000", help="Comma-separated row counts n."),
    dim: int = typer.Option(1280, min=1, help="Feature dimensions d."),
    classes: int = typer.Option(1000, min=2, help="Classes k."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
    c: float = typer.Option(1.0, "--C", min=0.0, help="The penalty C of the one fit per size."),
    tol: float = typer.Option(1e-4, min=0.0, help="Gradient tolerance (featbench.probe)."),
    max_iter: int = typer.Option(1000, min=1, help="Iteration cap (small: time per iteration only)."),
) -> None:
    """Time the linear probe on seeded synthetic data as n grows: fit s, iterations, s/iteration, peak memory."""
    from featbench.probe_bench import markdown, run

    sizes = [int(v) for v in _split(rows) or []]
    if not sizes or min(sizes) < classes:
        raise FeatbenchError(f"--rows: give row counts of at least --classes ({classes}), e.g. 10000,100000")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise FeatbenchError(f"--device {device}: CUDA is not available")
    table = run(sizes, dim, classes, device=device, C=c, tol=tol, max_iter=max_iter, echo=typer.echo)
    typer.echo(markdown(table))


@app.command("gpu-check")
@user_errors
def gpu_check_cmd(out: Path = typer.Option(Path("featbench-gpu-check"), help="Folder for gpu-check.md and the speed files."),
                  data_root: Optional[str] = typer.Option(None, help="Folders holding office_caltech10 and the minis (':'-separated): adds the Lite0 probe / fine-tuning run on CUDA.")) -> None:
    """On a GPU machine: the CNN speed table and e2e/synthetic ratio on CUDA, the probe up to 1.28M x 1280 x 1000,
    and with --data-root the fine-tuning study's GPU figures; one note."""
    from featbench.gpu_check import gpu_check

    raise typer.Exit(gpu_check(out, echo=typer.echo, data_root=data_root))


@results_app.command("add")
@user_errors
def results_add(run_dirs: List[Path] = typer.Argument(..., help="Run folders whose records join the corpus."),
                corpus: Path = typer.Option(Path("results"), help="Corpus folder (results/<suite>.jsonl)."),
                results_md: Path = typer.Option(Path("RESULTS.md"), help="The page regenerated from the corpus."),
                allow_partial: bool = typer.Option(False, help="Accept runs that did not complete.")) -> None:
    """Append the runs' records to the corpus (additive only) and regenerate RESULTS.md."""
    from featbench.reports.corpus import cli_add

    typer.echo(cli_add(run_dirs, corpus, results_md, allow_partial))


@results_app.command("render")
@user_errors
def results_render(corpus: Path = typer.Option(Path("results"), help="Corpus folder."),
                   out: Path = typer.Option(Path("RESULTS.md"), help="Where to write the page."),
                   check: bool = typer.Option(False, help="Exit 1 if OUT differs from a fresh rendering.")) -> None:
    """Regenerate RESULTS.md from the corpus (or check that it is in step)."""
    from featbench.reports.corpus import cli_render

    if not corpus.is_dir():
        raise FeatbenchError(f"--corpus {corpus}: no such folder")

    code, msg = cli_render(corpus, out, check)
    typer.echo(msg, err=bool(code))
    raise typer.Exit(code)


@published_app.command("list")
@user_errors
def published_list() -> None:
    """The published feature sets featbench can stage: name, repository, commit, files."""
    from featbench.datasets.published import sources

    for name, entry in sources().items():
        what = (f"{entry['per_class']} images/class x {'+'.join(entry['domains'])}" if entry.get("kind") == "images"
                else f"{len(entry['files'])} file(s)")
        typer.echo(f"{name:32s} {entry['repo']}@{entry['commit'][:12]}  {what}")


@published_app.command("stage")
@user_errors
def published_stage(name: str = typer.Argument(..., help="A name from `featbench published list`."),
                    git_dir: Path = typer.Option(..., help="A git snapshot (.git folder) of the source repository."),
                    out: Path = typer.Option(Path("~/featbench-data/published"), help="Data root to stage into.")) -> None:
    """Extract a published feature set from a git snapshot, check its sha256s, write classes.txt and SOURCE.md."""
    from featbench.datasets.published import stage

    typer.echo(f"staged {stage(name, git_dir, out)}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
