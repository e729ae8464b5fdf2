"""Per-image CPU cost of extractors, and what a dataset costs on N workers.

    python tests/benchmarks/cost_model.py [--images 48] [--dataset ../shared/datasets/caltech101_mini]

CPU seconds per image (``time.process_time`` of this process, one thread: OpenCV, torch and
BLAS limited to 1) for read + decode + extract, which is what one Ray worker with one CPU
spends; process time rather than wall time, so other jobs on a shared machine do not inflate
it. Learned extractors are fitted first (untimed; the fit runs once, on the driver). The table:
hours = images x cost / (N x efficiency), efficiency from ``--efficiency`` (the measured
ray2 / (2 x ray1) of executor_throughput.py).
"""
from __future__ import annotations

import argparse
import json
import time

import cv2
import torch
from threadpoolctl import threadpool_limits

from featbench.datasets.folder import read_dataset
from featbench.features import create

DATASETS = {"SUN-397": 108_754, "ImageNet-1k (train + val)": 1_331_167}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="../shared/datasets/caltech101_mini")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--extractors", default="hog;sift-dense-bow;cnn:tf_efficientnet_lite0")
    ap.add_argument("--workers", default="1,8,32,128")
    ap.add_argument("--efficiency", type=float, default=0.9)
    args = ap.parse_args()
    records = sorted(read_dataset(args.dataset).records, key=lambda r: r.relpath)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    for spec in args.extractors.split(";"):
        ex = create(spec)
        ex.configure_runtime(device="cpu", batch_size=16, num_workers=0, threads=1)
        with threadpool_limits(1):
            if ex.learns:
                train = records[-64:]
                ex.fit(train, image_ids=[r.uid for r in train], seed=0)
                ex.__setstate__(ex.__getstate__())  # no memo: every image is described
            items = records[:args.images]
            ex.transform_outputs(items[:2])  # warm-up (a CNN builds its network here)
            start = time.process_time()
            ex.transform_outputs(items)
            cost = (time.process_time() - start) / len(items)
        table = {name: {n: round(count * cost / (int(n) * (args.efficiency if int(n) > 1 else 1)) / 3600, 2)
                        for n in args.workers.split(",")} for name, count in DATASETS.items()}
        print(json.dumps({"extractor": spec, "cpu_s_per_image": round(cost, 4), "img_per_s_per_worker": round(1 / cost, 1),
                          "hours_on_N_workers": table}), flush=True)


if __name__ == "__main__":
    main()
