"""``featbench gpu-check``: the measurements to take once on a GPU machine, as one Markdown note.

On a machine with CUDA it runs, each as the user-facing command (so the note can quote it):

1. ``featbench speed --extractors cnn:tf_efficientnet_lite0,cnn:squeezenet1_0 --device cuda
   --synthetic --images 256 --batch-sizes 32,128``: the CNN speed table on the GPU with the
   end-to-end / synthetic ratio (the input pipeline's cost; target >= 0.8);
2. ``featbench probe-bench --device cuda --rows 100000,1280000 --dim 1280 --classes 1000``: the
   linear probe on CUDA up to the ImageNet-size case (1.28 M x 1280 x 1000);

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
              run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> int:
    """Run the checks (``gpu`` defaults to :func:`cuda_description`); return 0, or 1 when one failed."""
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
    for title, args in (("CNN speed on CUDA (e2e / synthetic)", [*SPEED_ARGS, "--out", str(out / "speed")]),
                        ("Linear probe on CUDA (seeded synthetic, d=1280, k=1000)", PROBE_ARGS)):
        echo(f"running: featbench {' '.join(args)}")
        start = time.perf_counter()
        done = run(_featbench(args), capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        status |= int(done.returncode != 0)
        table = ([ln for ln in done.stdout.splitlines() if ln.startswith("|")]
                 or ["```", *done.stdout.splitlines()[-20:], "```"])
        lines += [f"## {title}", "", f"`featbench {' '.join(args)}` (exit {done.returncode}, {elapsed:.0f} s)", "",
                  *table, ""]
        if done.returncode:
            lines += ["```", *done.stderr.splitlines()[-15:], "```", ""]
    (out / "gpu-check.md").write_text("\n".join(lines) + "\n")
    echo("\n".join(lines))
    return status
