"""The chunked feature store and the cache around it: chunks, dedup, damage, legacy layout,
concurrent runs, write failures (issue #11's store, issue #15's cache items)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from featbench.cache import FeatureCache
from featbench.store import FeatureStore

from helpers import make_texture_folder

UIDS = [f"{i:064x}" for i in range(40)]


def _rows(n=40, dim=6, offset=0.0):
    return {UIDS[i]: np.arange(dim, dtype=np.float32) + i + offset for i in range(n)}


def _chunk_files(root):
    return sorted((root / "chunks").glob("*/*.npy"))


def test_many_images_per_chunk_file_and_never_stored_twice(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.put_many("ns", _rows(30))
    cache.put_many("ns", _rows(40))  # 30 of them again: only the 10 new ones are written
    cache.put("ns", UIDS[0], np.zeros(6, np.float32))
    [stats] = cache.stats()
    assert (stats["entries"], stats["chunks"]) == (40, 2)
    assert len(_chunk_files(tmp_path)) == 2
    got = FeatureCache(tmp_path).get_many("ns", UIDS + ["ff" * 32])
    assert len(got) == 40
    np.testing.assert_array_equal(got[UIDS[0]], np.arange(6, dtype=np.float32))  # the first write stays
    assert not list(tmp_path.rglob(".tmp-*"))


def test_digests_list_stored_rows_from_the_index_alone(tmp_path):
    from featbench.store import row_digest

    rows = _rows(12)
    FeatureCache(tmp_path).put_many("ns", rows)
    for chunk in _chunk_files(tmp_path):
        chunk.unlink()  # the index is all digests() reads
    fresh = FeatureCache(tmp_path)
    layout, digests = fresh.digests("ns", UIDS[:15])
    assert layout == "<f4[6]" and set(digests) == set(UIDS[:12]) and fresh.hits == 12 and fresh.misses == 3
    assert all(digests[u] == row_digest(rows[u]) for u in digests)
    assert fresh.digests("other", UIDS[:3]) == ("", {})


def test_damaged_bytes_behind_an_intact_header_are_misses_and_get_rewritten(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.put_many("ns", _rows(10))
    [chunk] = _chunk_files(tmp_path)
    raw = bytearray(chunk.read_bytes())
    header = len(raw) - 10 * 6 * 4
    raw[header + 3 * 24: header + 3 * 24 + 4] = np.float32(1e6).tobytes()  # row 3: finite garbage
    raw[header + 7 * 24: header + 7 * 24 + 4] = np.float32(np.nan).tobytes()  # row 7: NaN
    chunk.write_bytes(bytes(raw))
    fresh = FeatureCache(tmp_path)
    got = fresh.get_many("ns", UIDS[:10])
    assert sorted(set(UIDS[:10]) - set(got)) == [UIDS[3], UIDS[7]] and fresh.misses == 2
    fresh.put_many("ns", _rows(10))  # the run recomputes the misses: they are written again
    again = FeatureCache(tmp_path).get_many("ns", UIDS[:10])
    assert len(again) == 10
    np.testing.assert_array_equal(again[UIDS[3]], np.arange(6, dtype=np.float32) + 3)


def test_truncated_or_missing_chunk_is_a_miss(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.put_many("ns", _rows(10))
    cache.put_many("ns", {**_rows(20), **{}})
    first, second = _chunk_files(tmp_path)[:2]
    first.write_bytes(first.read_bytes()[:100])
    got = FeatureCache(tmp_path).get_many("ns", UIDS[:20])
    assert len(got) == 10  # only the intact chunk's rows


def test_rows_of_another_length_or_dtype_are_misses_and_rewritten(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.put_many("ns", _rows(5, dim=6))
    cache.put_many("ns", _rows(3, dim=9))  # an extractor that now yields 9 values: old rows do not fit
    got = FeatureCache(tmp_path).get_many("ns", UIDS[:5])
    assert sorted(got) == UIDS[:3] and {v.shape for v in got.values()} == {(9,)}
    with pytest.raises(ValueError):
        cache.put_many("ns", {UIDS[0]: np.ones(9, np.float32), UIDS[1]: np.ones(8, np.float32)})
    with pytest.raises(ValueError):
        cache.put_many("ns", {UIDS[0]: np.array([{"a": 1}], dtype=object)})


def test_killed_between_chunk_and_index_leaves_no_entry(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path)
    cache.put_many("ns", _rows(4))

    def killed(src, dst):
        raise KeyboardInterrupt  # the process dies after writing the temporary chunk

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.put_many("ns", _rows(8))
    monkeypatch.undo()
    fresh = FeatureCache(tmp_path)
    assert len(fresh.get_many("ns", UIDS[:8])) == 4 and fresh.stats()[0]["entries"] == 4
    assert len(_chunk_files(tmp_path)) == 1 and not list(tmp_path.rglob(".tmp-*"))


def _legacy(root, ns, uid, array):
    path = root / ns / uid[:2] / f"{uid}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


def test_old_per_image_files_are_read_checked_and_migrated_on_hit(tmp_path):
    good = {u: np.full(6, i, np.float32) for i, u in enumerate(UIDS[:5])}
    paths = {u: _legacy(tmp_path, "ns", u, a) for u, a in good.items()}
    wrong_shape = _legacy(tmp_path, "ns", UIDS[5], np.ones(4, np.float32))
    nan = _legacy(tmp_path, "ns", UIDS[6], np.full(6, np.nan, np.float32))
    (tmp_path / "ns" / "meta.json").write_text(json.dumps({"output": "x", "extractor": {"spec": "hog"}}))
    cache = FeatureCache(tmp_path)
    got = cache.get_many("ns", UIDS[:7])
    assert sorted(got) == UIDS[:5] and (cache.hits, cache.misses) == (5, 2)
    assert not any(p.exists() for p in [*paths.values(), wrong_shape, nan])  # moved or evicted
    again = FeatureCache(tmp_path)
    assert len(again.get_many("ns", UIDS[:5])) == 5 and again.store.meta("ns")["output"] == "x"
    for u, a in good.items():
        np.testing.assert_array_equal(again.get("ns", u), a)


def test_cache_migrate_and_info_survive_a_truncated_meta_json(tmp_path):
    for i, u in enumerate(UIDS[:12]):
        _legacy(tmp_path, "ns1", u, np.full(3, i, np.float32))
    _legacy(tmp_path, "ns2", UIDS[0], np.ones(3, np.float32))
    (tmp_path / "ns1" / "meta.json").write_text('{"extractor": {"spec": "hog"}, "outp')
    cli = [sys.executable, "-m", "featbench.cli", "cache"]
    info = subprocess.run(cli + ["info", "--cache-dir", str(tmp_path)], capture_output=True, text=True)
    assert info.returncode == 0 and "12 per-image files" in info.stdout and "Traceback" not in info.stderr
    done = subprocess.run(cli + ["migrate", "--cache-dir", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0 and "migrated 13" in done.stdout
    assert not (tmp_path / "ns1").exists()
    stats = {s["name"]: s for s in FeatureCache(tmp_path).stats()}
    assert (stats["ns1"]["entries"], stats["ns1"]["chunks"], stats["ns2"]["entries"]) == (12, 1, 1)
    info = subprocess.run(cli + ["info", "--cache-dir", str(tmp_path)], capture_output=True, text=True)
    assert info.returncode == 0 and "12 images in     1 chunks" in info.stdout


def test_store_travels_to_another_process_without_its_connection(tmp_path):
    import pickle

    store = FeatureStore(tmp_path)
    store.put_many("ns", _rows(3))
    clone = pickle.loads(pickle.dumps(store))
    assert len(clone.get_many("ns", UIDS[:3])) == 3


def test_unwritable_cache_warns_once_and_the_run_goes_on(tmp_path, capsys):
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file where the cache folder should be")
    cache = FeatureCache(not_a_folder)
    cache.write_meta("ns", {"a": 1})
    cache.put_many("ns", _rows(3))
    cache.put_many("ns", _rows(5))
    assert cache.get_many("ns", UIDS[:3]) == {} and cache.misses == 3
    err = capsys.readouterr().err
    assert err.count("featbench: warning:") == 1 and "cannot write" in err


WRITER = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from featbench.cache import FeatureCache
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
    cache = FeatureCache(sys.argv[1])
    for n in (4, 40, 400, 4000):  # chunks of 4 .. 4000 rows of 64 floats: the big ones hit the limit
        rows = {f"{n:032x}{i:032x}": np.full(64, i, np.float32) for i in range(n)}
        cache.put_many("ns", rows)
    print(cache.warning)
""")


def test_writes_failing_midway_leave_no_damaged_entry(tmp_path):
    """A file-size limit (as `ulimit -f`, or a full disk) makes chunk writes fail part-way."""
    done = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path), str(200_000)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "cannot write" in done.stdout and done.stderr.count("featbench: warning:") == 1
    cache = FeatureCache(tmp_path)
    [stats] = cache.stats()
    assert stats["entries"] == 4 + 40 + 400  # the 4000-row chunk (1 MB) was refused whole
    for n in (4, 40, 400, 4000):
        got = cache.get_many("ns", [f"{n:032x}{i:032x}" for i in range(n)])
        assert len(got) == (n if n < 4000 else 0)
        assert all((v == int(k[32:], 16)).all() for k, v in got.items())
    assert not list(tmp_path.rglob(".tmp-*"))


@pytest.mark.slow
def test_two_runs_on_one_cache_at_once_both_finish_with_identical_results(tmp_path):
    data = tmp_path / "data"
    make_texture_folder(data / "textures", per_class=8)
    cmd = [sys.executable, "-m", "featbench.cli", "run", "--tasks", "textures", "--extractors",
           "hog:size=32", "--data-root", str(data), "--cache-dir", str(tmp_path / "cache"),
           "--quiet", "--no-report", "--batch-size", "2"]
    env = dict(os.environ, FEATBENCH_CHUNK_ROWS="2")
    procs = [subprocess.Popen(cmd + ["--out", str(tmp_path / f"out{i}")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    cols = ["task", "extractor", "trial", "top1", "mean_class_acc", "C", "cv_score"]
    a, b = (pd.read_csv(tmp_path / f"out{i}" / "results.csv")[cols] for i in range(2))
    pd.testing.assert_frame_equal(a, b)
    assert [s["entries"] for s in FeatureCache(tmp_path / "cache").stats()] == [48]  # each image stored once


def test_a_run_with_an_unwritable_cache_finishes_and_says_why(tmp_path, capsys):
    from featbench.runner import RunOptions, Runner
    from featbench.suite import Suite, TaskSpec

    make_texture_folder(tmp_path / "data" / "textures")
    (tmp_path / "cache").write_text("not a folder")
    suite = Suite(name="t", tasks=[TaskSpec(name="textures")], extractors=["hog:size=32"])
    options = RunOptions(out=tmp_path / "out", data_roots=[str(tmp_path / "data")], cache_dir=str(tmp_path / "cache"),
                         quiet=True, batch_size=4)
    Runner(suite, options, command=["test"]).run()
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    assert meta["status"] == "complete" and "cannot write" in meta["cache"]["warning"]
    assert capsys.readouterr().err.count("featbench: warning:") == 1
