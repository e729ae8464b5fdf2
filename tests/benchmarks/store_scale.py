"""Features of a large synthetic dataset through the runner's extraction into the chunked store.

    featbench synth-data /tmp/synth100k/synth --images 100000 --classes 100 --size 64 --seed 0
    nice -n 10 python tests/benchmarks/store_scale.py /tmp/synth100k/synth --cache /tmp/store100k

Prints one JSON line: images, files written, bytes on disk, bytes per image beyond the raw
float32 features, extraction time, and the time to open the store afresh and read every
feature back (``get_many`` over all uids, as a rerun does).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

from featbench.cache import FeatureCache
from featbench.datasets.folder import read_dataset
from featbench.features import create
from featbench.runner import RunOptions, Runner
from featbench.suite import Suite


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--cache", required=True)
    ap.add_argument("--extractor", default="hog:size=64")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    shutil.rmtree(args.cache, ignore_errors=True)
    start = time.perf_counter()
    records = read_dataset(args.dataset).records
    list_s = time.perf_counter() - start
    runner = Runner(Suite(name="scale", tasks=[], extractors=[args.extractor]),
                    RunOptions(cache_dir=args.cache, quiet=True, batch_size=args.batch_size), command=["store_scale"])
    ex = create(args.extractor)
    start = time.perf_counter()
    feats, stats = runner.extract(ex, records, "scale")
    extract_s = time.perf_counter() - start
    runner.cache.store.close()
    files = [p for p in Path(args.cache).rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    n, dim = len(records), len(next(iter(feats[""].values())))
    start = time.perf_counter()
    fresh = FeatureCache(args.cache)
    back = fresh.get_many(ex.cache_key(""), [r.uid for r in records])
    read_s = time.perf_counter() - start
    assert len(back) == n and fresh.misses == 0
    print(json.dumps({"images": n, "extractor": args.extractor, "dim": dim, "files": len(files),
                      "bytes": total, "index_bytes": (Path(args.cache) / "index.sqlite").stat().st_size,
                      "overhead_bytes_per_image": round((total - n * dim * 4) / n, 1),
                      "list_s": round(list_s, 2), "extract_s": round(extract_s, 1),
                      "img_per_s": round(n / extract_s, 1), "reopen_read_all_s": round(read_s, 2),
                      "read_us_per_image": round(1e6 * read_s / n, 1),
                      "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}))


if __name__ == "__main__":
    main()
