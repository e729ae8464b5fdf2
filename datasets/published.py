"""Published feature files and image subsets: the committed manifest (``published_sources.toml``) and staging.

The manifest names, for each published feature set, the public repository and commit it comes
from, each file's path there and its sha256, and the class names of the label values. No data is
committed: :func:`stage` extracts the files from a git snapshot of that repository
(``git show COMMIT:PATH``), checks every sha256, and writes ``classes.txt`` and ``SOURCE.md``
beside them, making a feature-file dataset folder (:mod:`featbench.datasets.feature_files`).

An entry with ``kind = "images"`` is a seeded subset of an image collection instead (e.g. PACS'
photo / cartoon / sketch domains): ``per_class`` files of each ``root/<domain>/<class>/`` folder
at the commit, drawn with ``seed`` from the sorted file list, are copied to
``out/name/<domain>/<class>/<file>`` with a ``MANIFEST.tsv`` (the layout of ``../shared``); the
sha256 of that MANIFEST.tsv is in the entry, so the same commit and seed must give the very same
files (:func:`stage_images`).
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

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
    if entry.get("kind") == "images":
        return stage_images(name, entry, git_dir, out)
    folder = Path(out).expanduser() / name
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"# {name}", "", entry.get("description", ""), "",
             f"Staged by `featbench published stage {name}` from {entry['repo']} at commit {entry['commit']}.", "",
             "| file | source path | sha256 |", "| --- | --- | --- |"]
    for f in entry["files"]:
        blob = _git(git_dir, "show", f"{entry['commit']}:{f['path']}")
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


def _git(git_dir: str | Path, *args: str) -> bytes:
    """stdout of ``git --git-dir GIT_DIR ARGS``; a failure is one FeatbenchError naming the snapshot."""
    try:
        return subprocess.run(["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        detail = exc.stderr.decode(errors="replace").strip() if getattr(exc, "stderr", None) else exc
        raise FeatbenchError(f"{git_dir}: git {' '.join(args)} failed ({detail})") from None


def image_subset(entry: dict[str, Any], git_dir: str | Path) -> list[tuple[str, str, str, str]]:
    """The seeded selection ``(relpath, class, domain, source path)``: ``per_class`` files of each
    ``root/domain/class`` folder at the entry's commit (sorted by name, drawn with a generator
    seeded by ``seed``, domain and class, kept in name order)."""
    root, rows = entry["root"].strip("/"), []
    for domain in entry["domains"]:
        for cls in entry["classes"]:
            listing = _git(git_dir, "ls-tree", "-z", "--name-only", entry["commit"], f"{root}/{domain}/{cls}/")
            names = sorted(p.decode() for p in listing.split(b"\0") if p)
            if len(names) < entry["per_class"]:
                raise FeatbenchError(f"{git_dir}: {root}/{domain}/{cls} has {len(names)} files at "
                                     f"{entry['commit'][:12]}, fewer than per_class={entry['per_class']}")
            rng = np.random.default_rng([int(entry["seed"]), *f"{domain}/{cls}".encode()])
            for path in sorted(rng.choice(names, size=entry["per_class"], replace=False)):
                rows.append((f"{domain}/{cls}/{Path(path).name}", cls, domain, path))
    return rows


def stage_images(name: str, entry: dict[str, Any], git_dir: str | Path, out: str | Path) -> Path:
    """Copy a ``kind = "images"`` entry's seeded subset into ``out/name`` with MANIFEST.tsv and SOURCE.md;
    the MANIFEST.tsv must have the entry's ``manifest_sha256`` (same commit, seed, files)."""
    folder = Path(out).expanduser() / name
    lines = ["relpath\tclass\tsplit\tbytes\tsha256"]
    for relpath, cls, domain, path in image_subset(entry, git_dir):
        blob = _git(git_dir, "show", f"{entry['commit']}:{path}")
        target = folder / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
        lines.append(f"{relpath}\t{cls}\t{domain}\t{len(blob)}\t{hashlib.sha256(blob).hexdigest()}")
    manifest_text = "\n".join(lines) + "\n"
    digest = hashlib.sha256(manifest_text.encode()).hexdigest()
    if entry.get("manifest_sha256") not in (None, digest):
        raise FeatbenchError(f"{git_dir}: the staged subset's MANIFEST.tsv has sha256 {digest}, "
                             f"the manifest says {entry['manifest_sha256']}")
    (folder / "MANIFEST.tsv").write_text(manifest_text)
    (folder / "SOURCE.md").write_text(
        f"# {name}\n\n{entry.get('description', '')}\n\nStaged by `featbench published stage {name}` from "
        f"{entry['repo']} at commit {entry['commit']}: {entry['per_class']} images per class and domain "
        f"({', '.join(entry['domains'])}) drawn with seed {entry['seed']} from {entry['root']}/<domain>/<class>/. "
        f"MANIFEST.tsv sha256 {digest}.\n")
    return folder


def check_staged(name: str, root: str | Path, manifest: Path = MANIFEST) -> list[str]:
    """Problems with a staged copy under ``root/name`` (missing files, sha256 mismatches); empty when it is intact."""
    entry = source(name, manifest)
    folder = Path(root).expanduser() / name
    if entry.get("kind") == "images":
        listed = folder / "MANIFEST.tsv"
        if not listed.is_file():
            return [f"{listed}: missing"]
        if hashlib.sha256(listed.read_bytes()).hexdigest() != entry["manifest_sha256"]:
            return [f"{listed}: sha256 differs from the manifest"]
        from featbench.datasets.folder import read_manifest_dataset

        try:
            read_manifest_dataset(folder, name, verify=True)
        except FeatbenchError as exc:
            return [str(exc)]
        return []
    problems = []
    for f in entry["files"]:
        p = folder / f["name"]
        if not p.is_file():
            problems.append(f"{p}: missing")
        elif hashlib.sha256(p.read_bytes()).hexdigest() != f["sha256"]:
            problems.append(f"{p}: sha256 differs from the manifest")
    return problems
