"""What a result needs to be reproduced: command, versions, machine, git commit."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import featbench

PACKAGES = ("numpy", "scipy", "torch", "torchvision", "timm", "opencv-contrib-python-headless",
            "scikit-image", "scikit-learn", "pandas", "faiss-cpu", "numba", "pillow")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "featbench": featbench.__version__}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch, or a broken driver: no GPU to report
        pass
    return []


def git_commit() -> str | None:
    """The featbench source tree's commit (with '-dirty' when it has uncommitted changes)."""
    src = Path(featbench.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict[str, object]:
    import torch

    return {"hostname": platform.node(), "platform": platform.platform(), "cpu": cpu_model(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpus": gpu_names()}


def snapshot(command: list[str] | None = None) -> dict[str, object]:
    return {"command": " ".join(command if command is not None else sys.argv),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "featbench_version": featbench.__version__, "schema_version": featbench.RESULT_SCHEMA_VERSION,
            "git_commit": git_commit(), "versions": versions(), "machine": machine()}
