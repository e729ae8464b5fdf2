"""Published feature files: the committed manifest (``published_sources.toml``) and staging.

The manifest names, for each published feature set, the public repository and commit it comes
from, each file's path there and its sha256, and the class names of the label values. No data is
committed: :func:`stage` extracts the files from a git snapshot of that repository
(``git show COMMIT:PATH``), checks every sha256, and writes ``classes.txt`` and ``SOURCE.md``
beside them, making a feature-file dataset folder (:mod:`featbench.datasets.feature_files`).
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

from featbench.errors import FeatbenchError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MANIFEST = Path(__file__).with_name("published_sources.toml")


def sources(manifest: Path = MANIFEST) -> dict[str, dict[str, Any]]:
    return tomllib.loads(Path(manifest).read_text())


def source(name: str, manifest: Path = MANIFEST) -> dict[str, Any]:
    known = sources(manifest)
    if name not in known:
        raise FeatbenchError(f"{manifest}: no published feature set '{name}'; known: {', '.join(sorted(known))}")
    return known[name]


def stage(name: str, git_dir: str | Path, out: str | Path, manifest: Path = MANIFEST) -> Path:
    """Extract ``name``'s files from the snapshot ``git_dir`` into ``out/name`` (checked); return that folder."""
    entry = source(name, manifest)
    folder = Path(out).expanduser() / name
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"# {name}", "", entry.get("description", ""), "",
             f"Staged by `featbench published stage {name}` from {entry['repo']} at commit {entry['commit']}.", "",
             "| file | source path | sha256 |", "| --- | --- | --- |"]
    for f in entry["files"]:
        try:
            blob = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"{entry['commit']}:{f['path']}"],
                                  check=True, capture_output=True).stdout
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            detail = exc.stderr.decode(errors="replace").strip() if hasattr(exc, "stderr") and exc.stderr else exc
            raise FeatbenchError(f"{git_dir}: cannot read {entry['commit'][:12]}:{f['path']} ({detail})") from None
        digest = hashlib.sha256(blob).hexdigest()
        if digest != f["sha256"]:
            raise FeatbenchError(f"{git_dir}: {f['path']} has sha256 {digest}, the manifest says {f['sha256']}")
        (folder / f["name"]).write_bytes(blob)
        lines.append(f"| {f['name']} | {entry['repo']}@{entry['commit'][:12]}:{f['path']} | {digest} |")
    (folder / "classes.txt").write_text("\n".join(entry["classes"]) + "\n")
    lines += ["", "classes.txt: label value i (sorted) -> line i, from the manifest "
              "(datasets/published_sources.toml)."]
    (folder / "SOURCE.md").write_text("\n".join(lines) + "\n")
    return folder


def check_staged(name: str, root: str | Path, manifest: Path = MANIFEST) -> list[str]:
    """Problems with a staged copy under ``root/name`` (missing files, sha256 mismatches); empty when it is intact."""
    entry = source(name, manifest)
    folder = Path(root).expanduser() / name
    problems = []
    for f in entry["files"]:
        p = folder / f["name"]
        if not p.is_file():
            problems.append(f"{p}: missing")
        elif hashlib.sha256(p.read_bytes()).hexdigest() != f["sha256"]:
            problems.append(f"{p}: sha256 differs from the manifest")
    return problems
