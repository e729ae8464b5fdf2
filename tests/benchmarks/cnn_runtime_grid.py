"""End-to-end and synthetic (model alone) images/s of CNN specs under several (decode workers,
torch threads) layouts, interleaved round by round in one process, so that the ratios between
settings are measured under the same machine load. Timing is ``featbench speed``'s own
(``measure_e2e``: one ``transform_outputs`` call over all images; ``measure_synthetic``).

    python tests/benchmarks/cnn_runtime_grid.py --specs cnn:tf_efficientnet_lite0 \\
        --layouts 0x2,1x2,1x1,0x1 --rounds 3 --images 128 --data-root ../shared/datasets

``--layouts`` are ``WORKERSxTHREADS`` (``default`` = the extractor's own rule); ``--no-e2e``
times the model alone (e.g. ``--specs cnn:tf_efficientnet_lite0:fold_bn=false,cnn:tf_efficientnet_lite0``).
Prints one line per measurement (with the 1-minute load average) and the medians.
"""
from __future__ import annotations

import argparse
import os
import statistics

import torch

from featbench.features.base import create
from featbench.speed_images import speed_images
from featbench.speed_measure import measure_e2e, measure_synthetic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", default="cnn:tf_efficientnet_lite0")
    ap.add_argument("--layouts", default="default")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--data-root", default="../shared/datasets")
    ap.add_argument("--no-e2e", action="store_true")
    args = ap.parse_args()
    dataset, records, _ = speed_images(args.images, [args.data_root])
    specs = args.specs.split(",")
    layouts = [None if v == "default" else tuple(int(x) for x in v.split("x")) for v in args.layouts.split(",")]
    extractors = {spec: create(spec) for spec in specs}
    print(f"{dataset}: {len(records)} images, batch {args.batch_size}, cores {len(os.sched_getaffinity(0))}, "
          f"torch {torch.__version__}, default threads {torch.get_num_threads()}", flush=True)
    default_threads = torch.get_num_threads()
    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    for rnd in range(args.rounds):
        for spec in specs:
            ex = extractors[spec]
            for layout in layouts:
                workers, threads = layout or (None, None)
                ex.configure_runtime("cpu", batch_size=args.batch_size, num_workers=workers, threads=threads)
                torch.set_num_threads(ex.threads or default_threads)
                label = f"{spec} workers={ex.num_workers} threads={ex.threads}"
                got = results.setdefault((spec, label), {"e2e": [], "syn": []})
                e2e = float("nan") if args.no_e2e else measure_e2e(ex, records, "cpu", args.batch_size, 2, 1)["img_per_s"]
                syn = measure_synthetic(ex, records, "cpu", args.batch_size, 3, 1)["img_per_s"]
                got["e2e"].append(e2e)
                got["syn"].append(syn)
                print(f"round {rnd} {label}: e2e {e2e:.1f} synthetic {syn:.1f} img/s, ratio {e2e / syn:.2f}"
                      f" | load {os.getloadavg()[0]:.2f}", flush=True)
    print("medians:")
    for (_, label), got in results.items():
        e2e, syn = statistics.median(got["e2e"]), statistics.median(got["syn"])
        print(f"  {label}: e2e {e2e:.1f} synthetic {syn:.1f} img/s, e2e / synthetic {e2e / syn:.2f}")


if __name__ == "__main__":
    main()
