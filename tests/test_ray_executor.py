"""The Ray executor on a real two-node Ray cluster started on this machine, bound to 127.0.0.1.

Same answers as the local executor (features bit for bit, results.csv), a worker process killed
with SIGKILL mid-extraction, a killed driver resumed by rerunning the command. The cluster is
small (1 CPU and 80 MB of object store per node) so it fits a 2-core CI machine.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from ray.cluster_utils import Cluster

from featbench.cache import FeatureCache
from featbench.runner import RunOptions, Runner
from featbench.store import FeatureStore
from featbench.suite import Suite, TaskSpec

from helpers import make_texture_folder

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NODE = {"num_cpus": 1, "object_store_memory": 80 * 2 ** 20, "node_ip_address": "127.0.0.1"}
COLS = ["task", "extractor", "layer", "trial", "top1", "mean_class_acc", "C", "cv_score"]
EXTRACTORS = ["hog:size=32", "sift-bow:k=16,max_side=96"]


@pytest.fixture(scope="module")
def cluster():
    """Head + one worker node, loopback only, no dashboard; stopped after the module."""
    mp = pytest.MonkeyPatch()
    # Ray swaps 127.0.0.1 for the machine's address when it connects, unless told this is a
    # single-host cluster; the flag is read at import, hence both the variable and the constant.
    mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from ray._private import ray_constants

    mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    c = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    c.add_node(**NODE)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()
    mp.undo()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_texture_folder(root / "textures")
    return root


def _run(out: Path, data_root: Path, cache: Path, executor="local", address=None, extractors=EXTRACTORS,
         batch_size=4):
    suite = Suite(name="t", tasks=[TaskSpec(name="textures")], extractors=list(extractors))
    options = RunOptions(out=out, data_roots=[str(data_root)], cache_dir=str(cache), quiet=True,
                         batch_size=batch_size, executor=executor, ray_address=address,
                         ray_workers=2 if executor == "ray" else None)
    runner = Runner(suite, options, command=["test"])
    runner.run()
    return runner, pd.read_csv(out / "results.csv")[COLS]


def _all_features(cache_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    store = FeatureStore(cache_dir)
    con = store.connect()
    out = {}
    for (name,) in con.execute("SELECT name FROM namespaces"):
        ns = store._ns_id(name, create=False)
        uids = [bytes(u).hex() for (u,) in con.execute("SELECT uid FROM entries WHERE ns = ?", (ns,))]
        out[name] = store.get_many(name, uids)
    return out


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, data_root):
    base = tmp_path_factory.mktemp("local")
    runner, df = _run(base / "out", data_root, base / "cache")
    return df, _all_features(base / "cache")


def _descendants(root: int) -> set[int]:
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parents[int(d)] = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_two_nodes_listening_on_loopback_only(cluster):
    ray.init(address=cluster.address, log_to_driver=False)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 2 and {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
    inodes = set()
    for pid in _descendants(os.getpid()):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN, owned by the cluster's processes
                listening.append(f[1].split(":")[0])
    assert listening, "the cluster should listen somewhere"
    loopback = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}  # v4, ::1, ::ffff:127.0.0.1
    assert set(listening) <= loopback, f"listening beyond loopback: {listening}"


def test_ray_gives_the_local_features_and_results(cluster, tmp_path, data_root, local_reference):
    runner, df = _run(tmp_path / "out", data_root, tmp_path / "cache", "ray", cluster.address)
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    assert meta["executor"]["name"] == "ray" and meta["executor"]["nodes"] == 2
    assert meta["executor"]["workers"] == 2 and runner.cache.hits == 0
    ref_df, ref_feats = local_reference
    pd.testing.assert_frame_equal(ref_df, df)
    feats = _all_features(tmp_path / "cache")
    assert feats.keys() == ref_feats.keys() and len(feats) == 2
    for ns, by_uid in ref_feats.items():
        assert by_uid.keys() == feats[ns].keys()
        for uid, vec in by_uid.items():
            np.testing.assert_array_equal(vec, feats[ns][uid])


def test_worker_killed_with_sigkill_costs_only_time(cluster, tmp_path, data_root, local_reference):
    kills: list[str] = []
    stop = threading.Event()

    def killer():
        """SIGKILL the first extractor actor seen running a slice (then one more, idle or not)."""
        deadline = time.monotonic() + 120
        while not stop.is_set() and len(kills) < 2 and time.monotonic() < deadline:
            for pid in _descendants(os.getpid()):
                title = _title(pid)
                if title.startswith("ray::ExtractWorker") and (".run" in title or kills):
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kills.append(title.strip())
                    except ProcessLookupError:
                        continue
                    time.sleep(0.5)
                    break
            time.sleep(0.005)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        runner, df = _run(tmp_path / "out", data_root, tmp_path / "cache", "ray", cluster.address,
                          extractors=["sift-bow:k=16,max_side=96"], batch_size=1)
    finally:
        stop.set()
        thread.join()
    print(f"kills tried: {len(kills)}: {kills}")
    assert kills, "no extractor worker was killed during extraction"
    ref_df, _ = local_reference
    pd.testing.assert_frame_equal(ref_df[ref_df.extractor.str.startswith("sift-bow")].reset_index(drop=True), df)


def test_killed_driver_resumes_with_everything_stored(cluster, tmp_path):
    """SIGKILL the `featbench run` process mid-extraction, rerun the same command: it reuses
    what was stored and ends with the uninterrupted run's results."""
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "featbench.cli", "synth-data", str(data / "synth"), "--images", "200",
                    "--classes", "4", "--size", "64", "--quiet"], check=True)
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "featbench.cli", "run", "--tasks", "synth", "--extractors", "hog:size=64",
           "--data-root", str(data), "--cache-dir", str(cache), "--out", str(tmp_path / "out"), "--quiet",
           "--no-report", "--batch-size", "4", "--executor", "ray", "--ray-address", cluster.address,
           "--ray-workers", "2"]
    env = dict(os.environ, FEATBENCH_CHUNK_ROWS="8")
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    store, stored = FeatureStore(cache), 0
    deadline = time.monotonic() + 180
    while driver.poll() is None and time.monotonic() < deadline:
        try:
            stored = store.connect().execute("SELECT COUNT(*) FROM entries").fetchone()[0] if store.exists else 0
        except Exception:  # the index is being created
            stored = 0
        if stored >= 16:
            driver.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    driver.wait()
    store.close()
    assert driver.returncode == -signal.SIGKILL, f"the driver was not killed mid-run: {driver.stderr.read()[-2000:]}"
    assert 16 <= stored < 200
    again = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    assert meta["cache"]["hits"] >= 16 and meta["status"] == "complete"
    resumed = pd.read_csv(tmp_path / "out" / "results.csv")[COLS]
    suite = Suite(name="t", tasks=[TaskSpec(name="synth")], extractors=["hog:size=64"])
    Runner(suite, RunOptions(out=tmp_path / "ref", data_roots=[str(data)], cache_dir=str(tmp_path / "cache-ref"),
                             quiet=True, batch_size=4), command=["test"]).run()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ref" / "results.csv")[COLS], resumed)
    assert FeatureCache(cache).stats()[0]["entries"] == 200  # each image stored once
