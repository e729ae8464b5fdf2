"""Run a suite: tasks x extractors x trials x methods x classifiers -> result rows.

What is computed is kept as soon as it exists: features go to the on-disk cache batch by
batch (a killed run resumes there), each result row is appended to ``results.jsonl`` the
moment it is scored, and ``run.json`` is rewritten after every task. A bad image is skipped
(listed with its reason in run.json) unless ``strict`` is set.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import featbench
from featbench import adaptation
from featbench import run_folder
from featbench.atomic import append_line, atomic_write_bytes, atomic_write_with
from featbench.cache import EVALUATIONS_DIR, SCRATCH_DIR, FeatureCache
from featbench.classifier import CLASSIFIERS, SOLVERS, LinearWeights, fit_evaluate, original_space_weights
from featbench.evaluation_cache import EvaluationCache, evaluation_key, warn_write_error
from featbench.feature_rows import EvaluationInputs, FeatureRows
from featbench.datasets.folder import ImageRecord
from featbench.datasets.images import max_pixels
from featbench.datasets.tasks import Task, resolve_task
from featbench.datasets.learning_curve import TrainSubsample, curve_size_of, curve_task_name
from featbench.errors import FeatbenchError
from featbench.executor import make_executor
from featbench.features import Extractor, create
from featbench.features.descriptor_store import DescriptorStore
from featbench.features_sample import sample_indices, write_features_sample
from featbench.finetune import FINETUNING, finetune_evaluate, is_finetune, parse_finetune
from featbench.gallery import GalleryKeeper
from featbench.provenance import snapshot
from featbench.records import RESULT_COLUMNS, ResultRecord, json_default
from featbench.suite import Suite

@dataclasses.dataclass
class RunOptions:
    out: Path = Path("featbench-out")
    data_roots: list[str] = dataclasses.field(default_factory=list)
    device: str = "auto"
    strict: bool = False
    quiet: bool = False
    cache_dir: str | None = None
    use_cache: bool = True
    batch_size: int = 32
    num_workers: int | None = None
    threads: int | None = None
    verify: bool = False
    report: bool = True  # build report.html / report.md before run.json says 'complete'
    n_jobs: int = 1
    solver: str = "torch"
    tol: float | None = None  # None: the solver's default
    max_iter: int | None = None
    executor: str = "local"  # where extraction runs: local or ray (bench/executor.py)
    ray_address: str | None = None
    ray_workers: int | None = None


@dataclasses.dataclass
class ExtractionStats:
    n_images: int = 0
    n_computed: int = 0
    seconds: float = 0.0
    cached_img_per_s: float | None = None  # speed recorded when cached features were computed

    @property
    def img_per_s(self) -> float:
        if self.seconds > 0 and self.n_computed:
            return self.n_computed / self.seconds
        return self.cached_img_per_s if self.cached_img_per_s is not None else float("nan")

    @property
    def img_per_s_source(self) -> str:
        if self.seconds > 0 and self.n_computed:
            return "measured"
        return "cache" if self.cached_img_per_s is not None else ""


class ChunkWriter:
    """Buffers computed rows per output and stores them as one chunk per ``chunk_rows`` rows
    (or per ``flush_s`` seconds), and on exit, also when the run stops with an error.

    A chunk is the unit of loss on a kill: a larger one means fewer files, a smaller one less
    recomputation. ``$FEATBENCH_CHUNK_ROWS`` overrides the default.
    """

    def __init__(self, cache: FeatureCache, namespaces: dict[str, str], chunk_rows: int | None = None,
                 flush_s: float = 30.0) -> None:
        self.cache, self.namespaces = cache, namespaces
        self.chunk_rows = chunk_rows or int(os.environ.get("FEATBENCH_CHUNK_ROWS") or 512)
        self.flush_s = flush_s
        self.pending: dict[str, dict[str, np.ndarray]] = {o: {} for o in namespaces}
        self.last = time.monotonic()

    def add(self, output: str, rows: dict[str, np.ndarray]) -> None:
        self.pending[output].update(rows)
        if len(self.pending[output]) >= self.chunk_rows or time.monotonic() - self.last > self.flush_s:
            self.flush()

    def flush(self) -> None:
        for o, rows in self.pending.items():
            if rows:
                self.cache.put_many(self.namespaces[o], rows)
            self.pending[o] = {}
        self.last = time.monotonic()

    def __enter__(self) -> "ChunkWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()


def default_data_roots() -> list[str]:
    roots = [r for r in os.environ.get("FEATBENCH_DATA", "").split(os.pathsep) if r]
    for candidate in ("../shared/datasets", "~/featbench-data"):
        if Path(candidate).expanduser().is_dir():
            roots.append(candidate)
    return roots


def _progress(total: int, desc: str, quiet: bool, unit: str = "img"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, leave=False, dynamic_ncols=True)


def _since(before: dict[str, int], now: dict[str, int]) -> dict[str, int]:
    """Counters (hits, misses, writes) gained since ``before``: one task's share of a run-long store."""
    return {k: n - before[k] for k, n in now.items()}


def _weights_or_none(model) -> tuple[np.ndarray, np.ndarray] | None:
    """The model's raw-feature weights for the evaluation cache; None where there are none (a
    picture's weights must never stop a run: the gallery records its own errors)."""
    try:
        return original_space_weights(model)
    except Exception:  # noqa: BLE001
        return None


class _Adapted:
    """One adaptation method's training and test matrices, computed on first use: a cached
    evaluation keyed by the method's inputs never needs them."""

    def __init__(self, method: str, inputs: EvaluationInputs, seed: int) -> None:
        self.method, self.inputs, self.seed = method, inputs, seed
        self._matrices = None

    def matrices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._matrices is None:
            self._matrices = adaptation.apply(self.method, *self.inputs.matrices, seed=self.seed)
        return self._matrices

    def shape(self) -> tuple[int, int]:
        X_train = self.matrices()[0]
        return int(X_train.shape[0]), int(X_train.shape[1])


class Runner:
    def __init__(self, suite: Suite, options: RunOptions, command: list[str] | None = None) -> None:
        self.suite = suite
        self.opt = options
        self.cache = FeatureCache(options.cache_dir, enabled=options.use_cache)
        # finished evaluations, in the cache's folder (one warning when that folder cannot be written)
        self.evaluations = EvaluationCache(
            self.cache.root / EVALUATIONS_DIR, enabled=options.use_cache,
            on_write_error=lambda exc: self.cache.warning is None and warn_write_error(exc))
        self.executor = make_executor(options.executor, options.ray_address, options.ray_workers, options.device)
        self.out = Path(options.out)
        self.failures: dict[str, dict[str, str]] = {}  # uid -> {relpath, reason}
        self.rows: list[dict[str, Any]] = []
        self.timings: dict[str, float] = {}
        self.meta = snapshot(command)
        self.meta.update(suite=dataclasses.asdict(suite), seed=suite.seed, device_requested=options.device,
                         data_roots=options.data_roots, cache_dir=str(self.cache.root) if options.use_cache else None)
        self.run_id = f"{self.meta['started']}-{os.getpid()}"
        self.extractor_info: dict[str, Any] = {}
        self.task_info: dict[str, Any] = {}
        self.sample_task: str | None = None
        # test images, what each extractor sees of them, probes and failures, for the report's galleries
        linear = next((c for c in suite.classifiers if c in CLASSIFIERS), "logreg")
        self.gallery = GalleryKeeper(self.out, suite.seed, linear)
        self._foreign: set[str] = set()  # entries of --out that are not this run's outputs
        self._store: DescriptorStore | None = None  # scratch descriptors of the current dataset
        self._store_dataset: str | None = None

    # -- setup: every input problem is reported before any work starts ---------------------
    def resolve(self) -> tuple[list[tuple[Task, list[str]]], list[Extractor]]:
        max_pixels()  # a bad $FEATBENCH_MAX_PIXELS is reported now, not image by image
        if self.opt.solver not in SOLVERS:
            raise FeatbenchError(f"unknown solver '{self.opt.solver}'; known: {', '.join(SOLVERS)}")
        for clf in self.suite.classifiers:
            if is_finetune(clf):
                parse_finetune(clf)  # a bad recipe option is reported before any work starts
            elif clf not in CLASSIFIERS:
                raise FeatbenchError(f"unknown classifier '{clf}'; known: {', '.join((*CLASSIFIERS, *FINETUNING))}")
        tasks = []
        for spec in self.suite.tasks:
            task = resolve_task(spec.name, self.opt.data_roots, protocol=spec.protocol,
                                protocol_options=spec.protocol_options, trials=spec.trials or self.suite.trials,
                                family=spec.family, verify=self.opt.verify)
            for m in spec.methods:
                try:
                    adaptation.check(m, has_target_labels=task.protocol.gives_target_labels)
                except FeatbenchError as exc:
                    raise FeatbenchError(f"task '{spec.name}': {exc}") from None
            check_classes(task, self.suite.seed)
            if spec.train_per_class:
                for n in spec.train_per_class:
                    trials = spec.trials or self.suite.trials or task.protocol.default_trials
                    tasks.append((dataclasses.replace(task, name=curve_task_name(spec.name, n), trials=trials,
                                                      protocol=TrainSubsample(task.protocol, n)), spec.methods))
            else:
                tasks.append((task, spec.methods))
        for task, _ in tasks:
            self.task_info[task.name] = {"dropped_files": list(getattr(task.dataset, "dropped", []))}
        extractors = [create(s) for s in self.suite.extractors]
        for ex in extractors:
            ex.check()
            ex.configure_runtime(device=self.opt.device, batch_size=self.opt.batch_size,
                                 num_workers=self.opt.num_workers, threads=self.opt.threads)
        return tasks, extractors

    # -- extraction with the cache ---------------------------------------------------------
    def extract(self, extractor: Extractor, records: Sequence[ImageRecord], desc: str,
                prepare: Callable[[], None] | None = None) -> tuple[dict[str, FeatureRows], ExtractionStats]:
        """Features of every record for every output (:class:`FeatureRows` by uid), from the cache
        or computed (by the executor, wherever it runs) and stored in chunks as they arrive.
        ``prepare`` (a learned extractor's fit) runs, timed into the stats, only when some feature
        must be computed. When the cache's index lists every row, the rows are read only when first
        used, so evaluations found in the evaluation cache never read them."""
        namespaces = {o: extractor.cache_key(o) for o in extractor.outputs}
        for o, ns in namespaces.items():
            self.cache.write_meta(ns, {"extractor": extractor.describe(), "output": o,
                                       "fit_key": extractor.fit_key})
        unique = {r.uid: r for r in records if r.uid not in self.failures}
        stats = ExtractionStats(n_images=len(unique), n_computed=0,
                                cached_img_per_s=self.cache.recorded_speed(namespaces[extractor.outputs[0]]))
        listed = {o: self.cache.digests(ns, unique) for o, ns in namespaces.items()}
        if all(len(digests) == len(unique) for _, digests in listed.values()):
            read: dict[str, dict[str, np.ndarray]] = {}

            def rows() -> dict[str, dict[str, np.ndarray]]:  # every output at once, on first use
                if not read:  # rows that no longer pass their digest check are computed again here
                    read.update(self._read_or_compute(extractor, namespaces, unique, desc, prepare, stats))
                return read

            return {o: FeatureRows.stored(layout, digests, lambda o=o: rows()[o],
                                          lambda uids, o=o: self.cache.get_many(namespaces[o], uids, count=False))
                    for o, (layout, digests) in listed.items()}, stats
        feats = self._read_or_compute(extractor, namespaces, unique, desc, prepare, stats)
        return {o: FeatureRows.computed(by_uid) for o, by_uid in feats.items()}, stats

    def _read_or_compute(self, extractor, namespaces, unique, desc, prepare, stats) -> dict[str, dict[str, np.ndarray]]:
        """Rows from the cache (already counted by ``extract``), the missing ones computed and stored."""
        outputs = extractor.outputs
        feats = {o: self.cache.get_many(ns, unique, count=False) for o, ns in namespaces.items()}
        missing = [rec for uid, rec in unique.items() if not all(uid in feats[o] for o in outputs)]
        if not missing:
            return feats
        if prepare is not None:
            start = time.perf_counter()
            prepare()
            stats.seconds += time.perf_counter() - start
        writer = ChunkWriter(self.cache, namespaces)
        with _progress(len(missing), desc, self.opt.quiet) as bar, writer:
            start = time.perf_counter()
            for indices, outs, errors in self.executor.batches(extractor, missing, max(1, self.opt.batch_size)):
                stats.seconds += time.perf_counter() - start
                for o, array in outs.items():
                    rows = {missing[i].uid: array[j] for j, i in enumerate(indices)}
                    feats[o].update(rows)
                    writer.add(o, rows)
                stats.n_computed += len(indices)
                for i, reason in errors.items():
                    rec = missing[i]
                    self.failures[rec.uid] = {"relpath": rec.relpath, "path": rec.path or "", "reason": reason}
                bar.update(len(indices) + len(errors))
                if errors and self.opt.strict:  # the good images of this batch are stored first
                    raise FeatbenchError(f"bad image (--strict): {next(iter(errors.values()))}")
                start = time.perf_counter()
        self.cache.record_speed(namespaces[outputs[0]], stats.n_computed, stats.seconds, self._device(extractor))
        return feats

    def _probe_device(self) -> str:
        """The classifier runs where the extractors do: ``--device`` (auto: CUDA when present)."""
        return self.opt.device

    @staticmethod
    def _device(ex: Extractor) -> str:
        return str(getattr(ex, "device", "cpu")) if ex.uses_torch else "cpu"

    # -- evaluation --------------------------------------------------------------------------
    def _usable(self, records: Sequence[ImageRecord]) -> list[ImageRecord]:
        return [r for r in records if r.uid not in self.failures]

    def run_task(self, task: Task, methods: list[str], extractors: list[Extractor]) -> None:
        seed = self.suite.seed
        splits = [task.split(t, seed) for t in range(task.trials)]
        everything = {r.uid: r for s in splits for r in (*s.train, *s.test, *s.target_train)}
        self.task_info[task.name] = {
            **self.task_info.get(task.name, {}),
            "dataset": task.dataset.summary(), "protocol": task.protocol.describe(), "trials": task.trials,
            "family": task.family, "methods": methods, "protocol_source": task.protocol_source,
            "dataset_info": task.dataset.info.as_dict(),
            "split_sizes": [{"train": len(s.train), "test": len(s.test), "target_train": len(s.target_train)}
                            for s in splits],
            "notes": sorted({n for s in splits for n in s.notes}),
            "split_checks": [s.stats for s in splits],
        }
        sample: list[tuple[str, str, str, FeatureRows]] = []
        self.gallery.start_task(task, self._usable(splits[0].test))
        before = self.evaluations.counts()
        with self._descriptor_store(task, extractors):
            self._run_extractors(task, methods, extractors, splits, everything, sample)
        self.task_info[task.name]["evaluation_cache"] = _since(before, self.evaluations.counts())
        if task.name == self.sample_task and sample:
            self._write_features_sample(task, splits[0], sample)
        self.gallery.finish_task(task.name)

    @contextlib.contextmanager
    def _descriptor_store(self, task: Task, extractors: list[Extractor]):
        """The scratch :class:`DescriptorStore` for the task's dataset, handed to every extractor.

        One store serves consecutive tasks on the same dataset (the trials of a task, the sizes of
        a learning curve, the shifts of Office-Caltech-10), so each image is described once however
        many trials, sizes and extractors on the same descriptor stage use it. It is deleted when a
        task on another dataset starts and when the run ends (``_close_descriptor_store``). Where:
        ``$FEATBENCH_SCRATCH``, else the cache folder (a temporary folder when the cache is off).
        run.json records per task what it saved (``descriptor_store``: hits, misses, writes).
        """
        if not any(ex.learns for ex in extractors):
            yield None
            return
        if self._store is not None and self._store_dataset != task.dataset.identity:
            self._close_descriptor_store()
        if self._store is None:
            base = os.environ.get("FEATBENCH_SCRATCH") or (str(self.cache.root / SCRATCH_DIR) if self.opt.use_cache
                                                           else tempfile.gettempdir())
            try:
                Path(base).mkdir(parents=True, exist_ok=True)
                self._store = DescriptorStore(tempfile.mkdtemp(prefix=f"descriptors-{os.getpid()}-", dir=base))
                self._store_dataset = task.dataset.identity
            except OSError as exc:  # no scratch space: describe per trial, as without a store
                self.task_info[task.name]["descriptor_store"] = {"error": f"{base}: {exc.strerror or exc}"}
                yield None
                return
        store = self._store
        before = store.counts()
        for ex in extractors:
            ex.use_descriptor_store(store)
        try:
            yield store
        finally:
            for ex in extractors:
                ex.use_descriptor_store(None)
            self.task_info[task.name]["descriptor_store"] = {
                **_since(before, store.counts()), "stopped_writing_disk_full": store.full}

    def _close_descriptor_store(self) -> None:
        if self._store is not None:
            self._store.clear()
        self._store, self._store_dataset = None, None

    def _run_extractors(self, task, methods, extractors, splits, everything, sample) -> None:
        seed = self.suite.seed
        for ex in extractors:
            ex.bind_dataset(task.dataset)
            self.gallery.see(task.name, ex)
            shared_feats, shared_stats = (None, None)
            if not ex.learns:
                shared_feats, shared_stats = self.extract(ex, list(everything.values()), f"{task.name} {ex.spec}")
            for t, split in enumerate(splits):
                if ex.learns:
                    train_items = self._usable(split.train + split.target_train)
                    ids = [r.uid for r in train_items]
                    ex.identify_fit(ids, seed + t)  # the fit runs only if a feature is missing from the cache

                    def fit(ex=ex, train_items=train_items, ids=ids, trial_seed=seed + t) -> None:
                        ex.fit(train_items, [r.label for r in train_items], image_ids=ids, seed=trial_seed)

                    feats, stats = self.extract(ex, [*split.train, *split.test, *split.target_train],
                                                f"{task.name} {ex.spec} trial {t}", prepare=fit)
                else:
                    feats, stats = shared_feats, shared_stats
                if t == 0 and task.name == self.sample_task:
                    sample += [(ex.spec, o, ex.family, by_uid) for o, by_uid in feats.items()]
                self._evaluate(task, t, seed + t, split, ex, feats, stats, methods)
                self._finetune(task, t, seed + t, split, ex, stats)

    def _write_features_sample(self, task: Task, split, sample) -> None:
        """Test features of trial 0 of ``sample_task``, for the report's t-SNE figure."""
        test = [r for r in split.test if all(r.uid in by_uid for *_, by_uid in sample)]
        if not test:
            return
        test = [test[i] for i in sample_indices(len(test))]  # only these rows are read from the cache
        uids = [r.uid for r in test]
        index = {c: i for i, c in enumerate(task.dataset.classes)}
        features = []
        for spec, o, fam, by_uid in sample:
            rows = by_uid.some(uids)
            features.append((spec, o, fam, np.stack([rows[u] for u in uids])))
        write_features_sample(self.out, task.name, task.dataset.classes, [index[r.label] for r in test], features,
                              split="test", trial=0, uids=[r.uid for r in test])

    def _evaluate(self, task, trial, seed, split, ex, feats, stats, methods) -> None:
        classes = task.dataset.classes
        label_index = {c: i for i, c in enumerate(classes)}
        linear = [c for c in self.suite.classifiers if not is_finetune(c)]
        bar = _progress(len(feats) * len(methods) * len(linear),
                        f"{task.name} {ex.spec} trial {trial} fit", self.opt.quiet, unit="fit")
        for output, rows in feats.items():
            inputs = EvaluationInputs(rows, {"train": split.train, "target_train": split.target_train,
                                             "test": split.test}, label_index)
            test_recs, yt_test = inputs.records["test"], inputs.y_test
            if not inputs.records["train"] or not test_recs:
                raise FeatbenchError(f"task '{task.name}': no usable training or test images left")
            for method in methods:
                adapted = _Adapted(method, inputs, seed)
                for clf in linear:
                    ev, reused, (n_train, dim) = self._fit_evaluate(
                        adapted, clf, seed, self.gallery.wants_model(task.name, ex, output, trial, method, clf))
                    row = self._record(task, trial, seed, ex, stats, ev, method=method, layer=output,
                                       classifier=clf, n_train=n_train, n_test=len(test_recs),
                                       dim=dim, device=self._device(ex), solver=ev.solver,
                                       tol=ev.tol, max_iter=ev.max_iter, n_iter=ev.n_iter, converged=ev.converged,
                                       fit_reused=reused)
                    self._append_row(row, task, split, ev.y_pred, yt_test, classes, test_recs)
                    self.gallery.after_evaluation(task.name, ex, output, trial, method, clf, ev.model,
                                                  [r.uid for r in test_recs], yt_test, ev.y_pred)
                    bar.update()
                    if not self.opt.quiet:
                        bar.write(f"  {task.name:34s} t{trial} {ex.spec}{'@' + output if output else ''} {method} {clf}: "
                              f"top1 {ev.top1:.3f}  mean-class {ev.mean_class_acc:.3f}  (C={ev.C:g})")
        bar.close()

    def _fit_evaluate(self, adapted: "_Adapted", clf: str, seed: int, needs_model: bool):
        """``fit_evaluate`` on the adapted matrices, or the same evaluation read back from the
        evaluation cache (:mod:`featbench.evaluation_cache`) when this very call was computed before:
        keyed by the adaptation method's inputs (their row digests), a hit neither reads a feature row
        nor adapts nor fits. With ``needs_model`` (the gallery draws this probe) its raw-feature weights
        are kept and read back too. Returns ``(evaluation, reused, (n_train, dim))``."""
        settings = dict(kind=clf, seed=seed, n_jobs=self.opt.n_jobs, solver=self.opt.solver, tol=self.opt.tol,
                        max_iter=self.opt.max_iter, device=self._probe_device())
        y_test = adapted.inputs.y_test
        key = None
        if self.evaluations.enabled:
            key = evaluation_key(adapted.method, adapted.inputs.digest, settings)
            if (found := self.evaluations.get(key, len(y_test), with_weights=needs_model)) is not None:
                return found[0], True, found[1]
        X_train, y_train, X_test = adapted.matrices()
        ev = fit_evaluate(X_train, y_train, X_test, y_test, **settings)
        weights = _weights_or_none(ev.model) if needs_model and key is not None else None
        if weights is not None:  # the gallery draws from these very weights instead of mapping them back again
            ev = dataclasses.replace(ev, model=LinearWeights(*weights))
        if key is not None:
            self.evaluations.put(key, ev, adapted.shape(), weights=weights)
        return ev, False, adapted.shape()

    def _finetune(self, task, trial, seed, split, ex, stats) -> None:
        """Fine-tuning rows (``finetune-head``/``finetune-all``) for a ``cnn:`` extractor: trained on
        the split's training images (plus labelled target images), scored on its test images.
        Adaptation methods act on features, so fine-tuning rows are method ``none``; extractors
        that are not CNNs have nothing to fine-tune (run.json notes it)."""
        kinds = [c for c in self.suite.classifiers if is_finetune(c)]
        if not kinds:
            return
        if ex.family != "cnn":
            notes = self.task_info[task.name].setdefault("notes", [])
            note = f"{', '.join(kinds)}: not applicable to {ex.spec} (not a cnn: extractor)"
            if note not in notes:
                notes.append(note)
            return
        classes = task.dataset.classes
        label_index = {c: i for i, c in enumerate(classes)}
        train = self._usable(split.train + split.target_train)
        test = self._usable(split.test)
        y_train = [label_index[r.label] for r in train]
        y_true = np.array([label_index[r.label] for r in test], dtype=np.int64)
        for kind in kinds:
            name, recipe = parse_finetune(kind)
            res = finetune_evaluate(ex, name, train, y_train, test, y_true, len(classes), seed=seed, recipe=recipe)
            ev = res.evaluation
            row = self._record(task, trial, seed, ex, stats, ev, method="none", layer="finetuned", classifier=kind,
                               n_train=len(train), n_test=len(test), dim=None, device=res.device,
                               recipe=json.dumps(res.recipe, sort_keys=True), epochs=res.epochs,
                               train_s=round(res.train_s, 4), train_img_per_s=res.train_img_per_s)
            self._append_row(row, task, split, ev.y_pred, y_true, classes, test)
            if not self.opt.quiet:
                print(f"  {task.name:34s} t{trial} {ex.spec} {kind}: top1 {ev.top1:.3f}  mean-class "
                      f"{ev.mean_class_acc:.3f}  ({res.epochs} epochs, {res.train_s:.0f} s)", flush=True)

    def _record(self, task, trial, seed, ex, stats, ev, **fields) -> dict[str, Any]:
        """One result row: what every row of (task, trial, extractor) shares, the evaluation's scores,
        and ``fields`` (method, layer, classifier, sizes, device and the evaluation's own columns)."""
        info = task.dataset.info
        describe = self.extractor_info.setdefault(ex.spec, ex.describe())
        return ResultRecord(
            schema_version=featbench.RESULT_SCHEMA_VERSION, featbench_version=featbench.__version__,
            run_id=self.run_id, suite=self.suite.name, task=task.name, family=task.family,
            dataset=task.dataset.name, dataset_id=task.dataset.identity, protocol=task.protocol.describe(),
            trial=trial, seed=seed, extractor=ex.spec, extractor_family=ex.family,
            extractor_config=ex.config.key, weights=weights_source(describe),
            C=ev.C, cv_score=ev.cv_score, top1=ev.top1, mean_class_acc=ev.mean_class_acc,
            extract_s=round(stats.seconds, 4), img_per_s=stats.img_per_s, fit_s=round(ev.fit_s, 4),
            img_per_s_source=stats.img_per_s_source, headline_metric=info.headline_metric,
            dataset_layout=info.layout, anchors_key=info.anchors_key, train_per_class=curve_size_of(task.name),
            **fields,
        ).as_dict()

    def _append_row(self, row, task, split, y_pred, y_true, classes, test_recs=()) -> None:
        self.rows.append(row)
        append_line(self.out / "results.jsonl", json.dumps(row, default=json_default))
        # predictions, for confusion matrices in the report (one file per run, appended)
        append_line(self.out / "predictions.jsonl", json.dumps(
            {"task": row["task"], "trial": row["trial"], "extractor": row["extractor"], "layer": row["layer"],
             "method": row["method"], "classifier": row["classifier"], "classes": classes,
             "y_true": y_true.tolist(), "y_pred": y_pred.tolist(),
             # added (additive): the test image behind each y_true / y_pred entry
             "uids": [r.uid for r in test_recs], "relpaths": [r.relpath for r in test_recs]}))

    # -- the whole run -------------------------------------------------------------------------
    def write_run_json(self, status: str, reason: str | None = None) -> None:
        meta = dict(self.meta, run_id=self.run_id, status=status, timings_s=self.timings,
                    tasks=self.task_info, extractors=self.extractor_info,
                    skipped_images=sorted(self.failures.values(), key=lambda f: f["relpath"]),
                    dropped_files=self.dropped_files(),
                    cache={"hits": self.cache.hits, "misses": self.cache.misses, "warning": self.cache.warning},
                    executor=self.executor.describe(),
                    outputs=run_folder.outputs_now(self.out, self._foreign))
        if reason is not None:
            meta["status_reason"] = reason
        atomic_write_bytes(self.out / "run.json", json.dumps(meta, indent=2, default=json_default).encode())

    def dropped_files(self) -> list[dict[str, str]]:
        """Entries named like images that the dataset listings left out, with the reason."""
        return sorted(({"task": t, **d} for t, info in self.task_info.items() for d in info.get("dropped_files", [])),
                      key=lambda d: (d["task"], d["relpath"]))

    def run(self, on_task_done: Callable[[str], None] | None = None) -> Path:
        """Check --out, lock it, resolve every input, then run; run.json says how it ended."""
        run_folder.check_out_dir(self.out)
        tasks, extractors = self.resolve()
        run_folder.prepare_out_dir(self.out)
        with run_folder.locked(self.out):
            self._foreign = run_folder.clear_earlier_outputs(self.out)
            self.write_run_json("running")
            try:
                with run_folder.sigterm_unwinds():
                    self._run(tasks, extractors, on_task_done)
            except BaseException as exc:
                with contextlib.suppress(Exception):  # the disk may be what failed
                    self.write_run_json("failed", reason=run_folder.failure_reason(exc))
                raise
            finally:
                self.executor.close()
                self._close_descriptor_store()
            self.write_run_json("complete")
        return self.out

    def _run(self, tasks, extractors, on_task_done) -> None:
        start = time.perf_counter()
        self.sample_task = embedding_task([t for t, _ in tasks])
        for task, methods in tasks:
            t0 = time.perf_counter()
            if not self.opt.quiet:
                print(f"task {task.name} ({task.protocol.describe()}, {task.trials} trial(s))", flush=True)
            self.run_task(task, methods, extractors)
            self.timings[task.name] = round(time.perf_counter() - t0, 2)
            self.write_run_json("running")
            if on_task_done:
                on_task_done(task.name)
        for ex in extractors:
            self.extractor_info[ex.spec] = ex.describe()
        self.timings["total"] = round(time.perf_counter() - start, 2)
        write_tables(self.out, self.rows)
        if self.opt.report:
            from featbench.reports import build_report

            self.write_run_json("reporting")
            build_report([self.out], self.out)


def embedding_task(tasks: Sequence[Task]) -> str | None:
    """The task whose test features the report embeds (t-SNE): the non-domain task with the fewest
    classes (first in suite order on ties), since a 2-D map of 100 classes shows no readable clusters."""
    plain = [t for t in tasks if t.source is None]
    return min(plain, key=lambda t: len(t.dataset.classes)).name if plain else None


def check_classes(task: Task, seed: int) -> None:
    """Refuse, before any work, a task whose training images hold fewer than two classes."""
    if len(task.dataset.classes) < 2:
        raise FeatbenchError(f"task '{task.name}': the dataset has {len(task.dataset.classes)} class(es) "
                             f"({', '.join(task.dataset.classes) or 'none'}); a classifier needs at least two")
    split = task.split(0, seed)
    train = {r.label for r in (*split.train, *split.target_train)}
    if len(train) < 2:
        raise FeatbenchError(f"task '{task.name}': its training images hold only {len(train)} class(es) "
                             f"({', '.join(sorted(train)) or 'none'}); a classifier needs at least two")


def weights_source(describe: dict[str, Any]) -> str:
    """'package', 'file', 'hub', 'random' ... for CNNs (from describe()['weights']), '' otherwise."""
    weights = describe.get("weights")
    return str(weights.get("source", "")) if isinstance(weights, dict) else ""


def write_tables(out: Path, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    atomic_write_with(out / "results.csv", lambda tmp: df.to_csv(tmp, index=False))
    atomic_write_with(out / "results.parquet", lambda tmp: df.to_parquet(tmp, index=False))
