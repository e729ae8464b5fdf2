"""Extraction on a Ray cluster: an ``ActorPool`` of extractor actors (``--executor ray``).

How it maps onto Ray's own machinery:

* One actor per worker (:class:`ExtractWorker`), held in a :class:`ray.util.ActorPool` that
  hands each free actor the next slice of images (``map_unordered``); no scheduler of ours.
* The extractor is fitted by the runner on the driver (training images only), put once in the
  object store, and every actor deserialises it once per fit state, so a CNN's weights are
  loaded once per worker. Ray moves it with cloudpickle (pickle protocol 5) in memory only;
  nothing featbench writes to disk is a pickle.
* CNN actors ask for one GPU each where the cluster has GPUs (``num_gpus=1``); every other
  actor asks for CPUs (the cluster's CPUs divided among the workers, used as its threads).
* Actors return feature arrays to the driver rather than writing to the store: the driver is
  then the store's only writer (no locking across nodes, workers need no path to the store),
  and features are small beside the images the workers read (a few KB per image).
* Faults: actors are created with ``max_restarts=-1`` and ``max_task_retries=-1``; a worker
  process killed mid-slice is restarted by Ray, reloads the extractor from the object store
  and its slice is retried, so a kill costs time only. A killed driver loses at most the
  features not yet flushed to the store; rerunning the command reuses everything stored.

Images are read by the workers from the records' paths: on a real cluster the dataset must be
on storage every node sees at the same path (and featbench installed on every node).
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

from featbench.errors import FeatbenchError
from featbench.features import Extractor
from featbench.features.base import Batch


#: Slices queued per actor at once.
PIPELINE = 2


class ExtractWorker:
    """One Ray actor: keeps one fitted extractor (weights loaded once) and transforms slices."""

    def __init__(self, device: str, threads: int) -> None:
        self.device, self.threads = device, threads
        self.key: str | None = None
        self.extractor: Extractor | None = None

    def run(self, key: str, holder: list, start: int, items: Sequence[Any], batch_size: int) -> list[Batch]:
        """Batches of ``items`` with indices shifted by ``start`` (the slice's place in the
        driver's list). ``holder`` wraps the extractor's object ref, so Ray fetches and
        deserialises it only when the key (config and fit state) changes."""
        if key != self.key:
            import ray

            extractor = ray.get(holder[0])
            extractor.configure_runtime(device=self.device, batch_size=batch_size, num_workers=0,
                                        threads=self.threads)
            self.extractor, self.key = extractor, key
        return [([start + i for i in indices], outs, {start + i: why for i, why in errors.items()})
                for indices, outs, errors in self.extractor.iter_batches(items, batch_size)]

    def pid(self) -> int:
        return os.getpid()


def fit_state_key(extractor: Extractor) -> str:
    return f"{extractor.config.key}|{extractor.fit_key or ''}"


class RayExecutor:
    """Batches of one extractor spread over an actor pool on a Ray cluster."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, device: str = "auto",
                 slice_images: int | None = None, threads: int | None = None) -> None:
        self.address, self.workers, self.device, self.threads = address, workers, device, threads
        self.slice_images = slice_images
        self._started_here = False
        self._pool_key: str | None = None
        self._actors: list = []
        self._pool = None
        self._ref_key: str | None = None
        self._ref = None
        self.layout: dict[str, Any] = {}

    # -- cluster -------------------------------------------------------------------------
    def _ray(self):
        try:
            import ray
        except ImportError as exc:
            raise FeatbenchError("--executor ray needs Ray: pip install 'featbench[ray]'") from exc
        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False, logging_level="warning")
                else:  # a one-machine cluster that listens on loopback only
                    ray.init(num_cpus=self.workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                             log_to_driver=False, logging_level="warning")
                    self._started_here = True
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise FeatbenchError(f"--ray-address {self.address or '(local)'}: cannot start or reach "
                                     f"a Ray cluster ({exc})") from exc
        return ray

    def _pool_for(self, extractor: Extractor):
        """The actor pool for this extractor config, created on first use (the previous pool's
        actors are released first so their CPUs/GPUs are free)."""
        ray = self._ray()
        key = f"{extractor.config.key}|{extractor.uses_torch}"
        if key == self._pool_key and self._pool is not None:
            return self._pool
        self._release()
        from ray.util import ActorPool

        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
        use_gpu = extractor.uses_torch and gpus > 0 and self.device != "cpu"
        workers = self.workers or (gpus if use_gpu else max(1, cpus))
        threads = self.threads or max(1, cpus // workers)
        options = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": threads}
        actor = ray.remote(ExtractWorker).options(max_restarts=-1, max_task_retries=-1, **options)
        self._actors = [actor.remote("cuda" if use_gpu else "cpu", threads) for _ in range(workers)]
        # each actor listed twice: a second slice waits in its queue while the first runs, so
        # no actor idles through the round trip to the driver
        self._pool, self._pool_key = ActorPool(self._actors * PIPELINE), key
        self.layout = {"workers": workers, "threads_per_worker": threads, "gpu_per_worker": int(use_gpu),
                       "cluster_cpus": cpus, "cluster_gpus": gpus, "nodes": len(ray.nodes())}
        return self._pool

    def _release(self) -> None:
        if self._actors:
            import ray

            for a in self._actors:
                ray.kill(a)
        self._actors, self._pool, self._pool_key = [], None, None

    # -- executor interface ----------------------------------------------------------------
    def batches(self, extractor: Extractor, items: Sequence[Any], batch_size: int) -> Iterator[Batch]:
        if not items:
            return
        pool = self._pool_for(extractor)
        ray = self._ray()
        state = fit_state_key(extractor)
        if state != self._ref_key:  # one copy of the fitted extractor in the object store
            self._ref, self._ref_key = ray.put(extractor), state
        holder = [self._ref]
        workers = len(self._actors)
        size = self.slice_images or max(batch_size, min(8 * batch_size, -(-len(items) // (4 * workers))))
        slices = [(start, list(items[start:start + size])) for start in range(0, len(items), size)]

        def submit(actor, piece):
            return actor.run.remote(state, holder, piece[0], piece[1], batch_size)

        for result in pool.map_unordered(submit, slices):
            yield from result

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address or "local", **self.layout}

    def close(self) -> None:
        self._release()
        self._ref = self._ref_key = None
        if self._started_here:
            import ray

            ray.shutdown()
            self._started_here = False
