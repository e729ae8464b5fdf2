"""``featbench gpu-check``: the measurements to take once on a GPU machine, as one Markdown note.

On a machine with CUDA it runs, each as the user-facing command (so the note can quote it):

1. ``featbench speed --extractors cnn:tf_efficientnet_lite0,cnn:squeezenet1_0 --device cuda
   --synthetic --images 256 --batch-sizes 32,128``: the CNN speed table on the GPU with the
   end-to-end / synthetic ratio (the input pipeline's cost; target >= 0.8);
2. ``featbench probe-bench --device cuda --rows 100000,1280000 --dim 1280 --classes 1000``: the
   linear probe on CUDA up to the ImageNet-size case (1.28 M x 1280 x 1000);

3. with ``--data-root`` naming folders that hold the shared datasets, ``featbench run`` of
   EfficientNet-Lite0 on office_caltech10 amazon->webcam and the three minis with the linear
   probe, ``finetune-head`` and ``finetune-all`` (BatchNorm frozen, the recipe's default, and in
   train mode), one trial, on CUDA: the transfer study's GPU figures (:data:`TRANSFER_ARGS`);

and writes ``gpu-check.md`` (commands, exit codes, their tables, elapsed seconds) under ``--out``.
Without CUDA it says so, writes a note saying so, and exits 0: there is nothing to measure.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

SPEED_ARGS = ["speed", "--extractors", "cnn:tf_efficientnet_lite0,cnn:squeezenet1_0", "--device", "cuda",
              "--synthetic", "--images", "256", "--batch-sizes", "32,128", "--no-record"]
PROBE_ARGS = ["probe-bench", "--device", "cuda", "--rows", "100000,1280000", "--dim", "1280", "--classes", "1000"]
TRANSFER_TASKS = "office_caltech10:amazon->webcam,caltech101_mini,cub200_mini,scene15_mini"
TRANSFER_ARGS = ["run", "--tasks", TRANSFER_TASKS, "--extractors", "cnn:tf_efficientnet_lite0", "--classifiers",
                 "logreg,finetune-head,finetune-all,finetune-head:bn=train,finetune-all:bn=train",
                 "--device", "cuda", "--trials", "1", "--quiet"]
TRANSFER_COLUMNS = ["task", "classifier", "top1", "mean_class_acc", "epochs", "train_s", "train_img_per_s", "device"]


def transfer_table(run_dir: Path) -> list[str]:
    """The run's fine-tuning and probe rows as Markdown table lines (empty when it wrote none)."""
    import pandas as pd

    path = run_dir / "results.csv"
    if not path.is_file():
        return []
    df = pd.read_csv(path)
    cols = [c for c in TRANSFER_COLUMNS if c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df[cols].iterrows():
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r) + " |")
    return lines


def cuda_description() -> str | None:
    """'NVIDIA H100 80GB HBM3 (80 GiB), torch 2.x, CUDA 12.x' or None without a usable GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}"


def _featbench(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "featbench.cli", *args]


def gpu_check(out: Path, echo: Callable[[str], None] = print, gpu: str | None = None,
              run: Callable[..., subprocess.CompletedProcess] = subprocess.run, data_root: str | None = None) -> int:
    """Run the checks (``gpu`` defaults to :func:`cuda_description`; the transfer run only with
    ``data_root``); return 0, or 1 when one failed."""
    out.mkdir(parents=True, exist_ok=True)
    gpu = gpu if gpu is not None else cuda_description()
    lines = ["# featbench GPU check", ""]
    if gpu is None:
        lines.append("No CUDA GPU on this machine (torch.cuda.is_available() is False): nothing measured. "
                     "Run `featbench gpu-check` on a GPU machine.")
        (out / "gpu-check.md").write_text("\n".join(lines) + "\n")
        echo(lines[-1])
        return 0
    lines += [f"GPU: {gpu}", ""]
    status = 0
    checks = [("CNN speed on CUDA (e2e / synthetic)", [*SPEED_ARGS, "--out", str(out / "speed")]),
              ("Linear probe on CUDA (seeded synthetic, d=1280, k=1000)", PROBE_ARGS)]
    if data_root:
        checks.append(("Linear probe and fine-tuning of EfficientNet-Lite0 on CUDA",
                       [*TRANSFER_ARGS, "--data-root", data_root, "--out", str(out / "transfer"),
                        "--cache-dir", str(out / "transfer-cache")]))
    for title, args in checks:
        echo(f"running: featbench {' '.join(args)}")
        start = time.perf_counter()
        done = run(_featbench(args), capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        status |= int(done.returncode != 0)
        table = (transfer_table(out / "transfer") if args[0] == "run" else
                 [ln for ln in done.stdout.splitlines() if ln.startswith("|")])
        table = table or ["```", *done.stdout.splitlines()[-20:], "```"]
        lines += [f"## {title}", "", f"`featbench {' '.join(args)}` (exit {done.returncode}, {elapsed:.0f} s)", "",
                  *table, ""]
        if done.returncode:
            lines += ["```", *done.stderr.splitlines()[-15:], "```", ""]
        (out / "gpu-check.md").write_text("\n".join(lines) + "\n")  # what is measured so far survives a kill
    echo("\n".join(lines))
    return status
