"""Images/s of the local executor against the Ray executor on the same images, in one process.

    python tests/benchmarks/executor_throughput.py [--images 160] [--dataset ../shared/datasets/caltech101_mini]

For each extractor: fit (learned ones) once on the driver, then time, alternating so that
background load hits all alike, the local executor, Ray with 2 workers (1 thread each) and Ray
with 1 worker (1 thread); each on every image, best of ``--repeats``. Actor start-up and weight
loading are paid in an untimed warm-up pass (they are a one-off per run; printed apart).
Prints one JSON line per extractor and the ratios ray2/local and ray2/ray1.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time

import ray

from featbench.datasets.folder import read_dataset
from featbench.executor import LocalExecutor
from featbench.features import create
from featbench.ray_executor import RayExecutor


def timed(executor, ex, items, batch_size):
    start = time.perf_counter()
    n = sum(len(idx) for idx, _, _ in executor.batches(ex, items, batch_size))
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="../shared/datasets/caltech101_mini")
    ap.add_argument("--images", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--extractors", default="hog;sift-dense-bow;cnn:tf_efficientnet_lite0")
    args = ap.parse_args()
    records = sorted(read_dataset(args.dataset).records, key=lambda r: r.relpath)[:args.images]
    # logical CPUs for both Ray pools at once (2 + 1 actors, 1 thread each); only one pool works at a time
    ray.init(num_cpus=3, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             logging_level="warning")
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "ray": ray.__version__, "uptime_before": subprocess.run(["uptime"], capture_output=True,
                                                                              text=True).stdout.strip()}))
    for spec in args.extractors.split(";"):
        ex = create(spec)
        ex.configure_runtime(device="cpu", batch_size=args.batch_size)
        fit_s = 0.0
        if ex.learns:
            train = records[::2]
            start = time.perf_counter()
            ex.fit(train, image_ids=[r.uid for r in train], seed=0)
            fit_s = time.perf_counter() - start
            ex.__setstate__(ex.__getstate__())  # drop the fit's descriptor memo: every executor computes all
        executors = {"local": LocalExecutor(), "ray2": RayExecutor(workers=2, threads=1),
                     "ray1": RayExecutor(workers=1, threads=1)}
        best = {k: 0.0 for k in executors}
        warm = {}
        for name, executor in executors.items():  # untimed: actors start, weights load
            start = time.perf_counter()
            timed(executor, ex, records[:args.batch_size], args.batch_size)
            warm[name] = round(time.perf_counter() - start, 2)
        for _ in range(args.repeats):
            for name, executor in executors.items():
                best[name] = max(best[name], timed(executor, ex, records, args.batch_size))
        for executor in executors.values():
            executor.close()
        print(json.dumps({"extractor": spec, "images": len(records), "fit_s": round(fit_s, 2), "warmup_s": warm,
                          "img_per_s": {k: round(v, 2) for k, v in best.items()},
                          "ray2_over_local": round(best["ray2"] / best["local"], 3),
                          "ray2_over_ray1": round(best["ray2"] / best["ray1"], 3),
                          "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}),
              flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
