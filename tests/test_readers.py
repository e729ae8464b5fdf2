"""Readers for the official dataset layouts and the torchvision wrappers, on tiny trees in tmp_path."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featbench.datasets.folder import read_dataset
from featbench.datasets.protocols import make_protocol
from featbench.datasets.readers import crop_box, detect_layout, read_any
from featbench.datasets.torchvision_sets import TORCHVISION, load_torchvision
from featbench.datasets.tasks import available_tasks, resolve_task
from featbench.errors import FeatbenchError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def png(path: Path, value: int = 0, size=(6, 8)) -> Path:
    """A tiny image; distinct ``value`` gives distinct bytes (and uid)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(value).integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG" if path.suffix == ".jpg" else "PNG", quality=100)
    return path


def labels(ds) -> Counter:
    return Counter(r.label for r in ds.records)


# -- Caltech-101 --------------------------------------------------------------------------------------

def caltech_tree(root: Path, per_class=(("BACKGROUND_Google", 3), ("Faces", 4), ("ant", 35))) -> Path:
    cats = root / "101_ObjectCategories"
    v = 0
    for c, n in per_class:
        for i in range(1, n + 1):
            png(cats / c / f"image_{i:04d}.jpg", v)
            v += 1
    (cats / "BACKGROUND_Google" / "tmp").write_text("not an image")
    return root


def test_caltech101_tree(tmp_path):
    root = caltech_tree(tmp_path / "caltech101")
    assert detect_layout(root) == "caltech101-tree"
    assert detect_layout(root / "101_ObjectCategories") == "caltech101-tree"
    ds = read_any(root)
    assert labels(ds) == {"BACKGROUND_Google": 3, "Faces": 4, "ant": 35}
    assert ds.groups == ["all"] and ds.family == "object"
    assert ds.records[0].relpath.startswith("101_ObjectCategories/")
    task = resolve_task("caltech101", [str(tmp_path)])
    assert task.protocol.name == "caltech101-30"
    split = task.split(0, 0)
    assert Counter(r.label for r in split.train) == {"ant": 30, "Faces": 4}
    assert Counter(r.label for r in split.test) == {"ant": 5}
    assert any("'Faces' has 4 < 30" in n for n in split.notes)


def test_torchvision_caltech101_wraps_the_constructor(tmp_path):
    caltech_tree(tmp_path / "caltech101")
    ds = load_torchvision("tv_caltech101", tmp_path, download=False)
    assert ds.name == "tv_caltech101" and len(ds.records) == 42
    task = resolve_task("tv_caltech101", [str(tmp_path)])
    assert task.protocol.name == "caltech101-30" and task.dataset.family == "object"
    assert ("tv_caltech101", f"torchvision.datasets.Caltech101 ({tmp_path / 'caltech101'})") in \
        list(available_tasks([str(tmp_path)]))


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_missing_download_is_a_clear_error(tmp_path, name, monkeypatch):
    monkeypatch.delenv("FEATBENCH_DOWNLOAD", raising=False)
    with pytest.raises(FeatbenchError) as err:
        resolve_task(name, [str(tmp_path)])
    msg = str(err.value)
    assert name in msg and "FEATBENCH_DOWNLOAD=1" in msg and str(tmp_path) in msg
    assert not any(tmp_path.iterdir())  # no empty folder left behind


def test_torchvision_without_data_root():
    with pytest.raises(FeatbenchError, match="no data root"):
        resolve_task("tv_sun397", [])


# -- Flowers-102 ----------------------------------------------------------------------------------------

def flowers_tree(root: Path) -> Path:
    from scipy.io import savemat

    base = root / "flowers-102"
    n = 12
    for i in range(1, n + 1):
        png(base / "jpg" / f"image_{i:05d}.jpg", i)
    savemat(base / "imagelabels.mat", {"labels": np.array([[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]])})
    savemat(base / "setid.mat", {"trnid": np.array([[1, 7]]), "valid": np.array([[2, 8]]),
                                 "tstid": np.array([[3, 4, 5, 6, 9, 10, 11, 12]])})
    return root


def test_flowers102_layout(tmp_path):
    flowers_tree(tmp_path)
    for folder in (tmp_path, tmp_path / "flowers-102"):
        assert detect_layout(folder) == "flowers102"
    ds = read_any(tmp_path / "flowers-102", name="flowers102")
    assert Counter(r.group for r in ds.records) == {"train": 2, "val": 2, "test": 8}
    assert set(ds.classes) == {"pink primrose", "hard-leaved pocket orchid"}  # torchvision's names
    assert ds.family == "fine-grained" and not ds.is_domain_dataset
    task = resolve_task("flowers-102", [str(tmp_path)])
    assert task.protocol.name == "given"
    split = task.split(0, 0)
    assert len(split.train) == 4 and len(split.test) == 8  # train + val -> training


def test_torchvision_flowers_checks_integrity(tmp_path):
    flowers_tree(tmp_path)  # our fake .mat files fail torchvision's md5 check
    with pytest.raises(FeatbenchError, match="Flowers102"):
        load_torchvision("tv_flowers102", tmp_path, download=False)


# -- Oxford-IIIT Pets -------------------------------------------------------------------------------------

def pets_tree(root: Path) -> Path:
    base = root / "oxford-iiit-pet"
    rows = {"trainval": ["Abyssinian_1 1 1 1", "Abyssinian_2 1 1 1", "american_bulldog_1 2 2 1"],
            "test": ["Abyssinian_3 1 1 1", "american_bulldog_2 2 2 1"]}
    (base / "annotations").mkdir(parents=True)
    for split, lines in rows.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        for i, line in enumerate(lines):
            png(base / "images" / f"{line.split()[0]}.jpg", hash(line) % 60000)
    return root


def test_oxford_pets_layout_and_torchvision(tmp_path):
    pets_tree(tmp_path)
    assert detect_layout(tmp_path / "oxford-iiit-pet") == "oxford-pets"
    ds = load_torchvision("tv_oxford_pets", tmp_path, download=False)
    assert Counter(r.group for r in ds.records) == {"train": 3, "test": 2}
    assert set(ds.classes) == {"Abyssinian", "american_bulldog"}
    task = resolve_task("tv_oxford_pets", [str(tmp_path)])
    assert task.protocol.name == "given" and task.family == "fine-grained"
    assert len(task.split(0, 0).train) == 3


# -- SUN-397 ----------------------------------------------------------------------------------------------

def sun_tree(root: Path, partitions: bool, n: int = 4) -> Path:
    base = root / "SUN397"
    base.mkdir(parents=True)
    (base / "ClassName.txt").write_text("/a/abbey\n/b/bakery/shop\n")
    files = {c: [f"/{c}/sun_{c.replace('/', '')}{i:02d}.jpg" for i in range(n)] for c in ("a/abbey", "b/bakery/shop")}
    v = 0
    for fs in files.values():
        for f in fs:
            png(base / f.lstrip("/"), v)
            v += 1
    if partitions:
        (base / "Partitions").mkdir()
        for k in (1, 2):
            tr = [fs[(k + j) % 4] for fs in files.values() for j in range(2)]
            te = [f for fs in files.values() for f in fs if f not in tr]
            (base / "Partitions" / f"Training_{k:02d}.txt").write_text("\n".join(tr) + "\n")
            (base / "Partitions" / f"Testing_{k:02d}.txt").write_text("\n".join(te) + "\n")
    return root


def test_sun397_with_partitions(tmp_path):
    sun_tree(tmp_path, partitions=True)
    ds = load_torchvision("tv_sun397", tmp_path, download=False)
    assert set(ds.classes) == {"abbey", "bakery/shop"} and len(ds.records) == 8 and len(ds.partitions) == 2
    assert ds.records[0].relpath.startswith("a/abbey/")
    task = resolve_task("tv_sun397", [str(tmp_path)], trials=2)
    assert task.protocol.name == "sun397-partitions" and task.trials == 2
    s0, s1 = task.split(0, 0), task.split(1, 0)
    assert len(s0.train) == 4 and len(s0.test) == 4 and not {r.uid for r in s0.train} & {r.uid for r in s0.test}
    assert {r.relpath for r in s0.train} != {r.relpath for r in s1.train}
    assert "partition 1 of 2" in s0.notes[0] and "partition 2 of 2" in s1.notes[0]


def test_sun397_without_partitions_is_noted(tmp_path):
    sun_tree(tmp_path, partitions=False, n=52)  # the fallback draws 50 + 50 per class
    assert detect_layout(tmp_path / "SUN397") == "sun397"
    task = resolve_task("SUN397", [str(tmp_path)])
    assert task.protocol.name == "sun397-partitions"
    split = task.split(0, 0)
    assert len(split.train) == 100 and len(split.test) == 4
    assert any("not the official partitions" in n for n in split.notes)


# -- CUB-200-2011 ------------------------------------------------------------------------------------------

def cub_tree(root: Path) -> Path:
    base = root / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    lines, split, lab, boxes = [], [], [], []
    k = 0
    for c_i, c in enumerate(classes, 1):
        for j in range(3):
            k += 1
            rel = f"{c}/{c.split('.')[1]}_{j:04d}.jpg"
            png(base / "images" / rel, k, size=(60, 80))
            lines.append(f"{k} {rel}")
            split.append(f"{k} {1 if j < 2 else 0}")
            lab.append(f"{k} {c_i}")
            boxes.append(f"{k} 20.0 10.0 40.0 20.0")
    for name, rows in (("images.txt", lines), ("train_test_split.txt", split), ("image_class_labels.txt", lab),
                       ("bounding_boxes.txt", boxes), ("classes.txt", [f"{i} {c}" for i, c in enumerate(classes, 1)])):
        (base / name).write_text("\n".join(rows) + "\n")
    return root


def test_cub200_official_layout_and_crop(tmp_path):
    cub_tree(tmp_path / "CUB_200_2011_download")
    folder = tmp_path / "CUB_200_2011_download"
    assert detect_layout(folder) == "cub200-2011"
    ds = read_any(folder, name="cub200")
    assert labels(ds) == {"Black_footed_Albatross": 3, "Laysan_Albatross": 3}
    assert Counter(r.group for r in ds.records) == {"train": 4, "test": 2}
    assert len(ds.boxes) == 6 and ds.family == "fine-grained"
    plain = make_protocol("given").split(ds, 0)
    cropped = make_protocol("given", crop=1.5).split(ds, 0)
    assert [r.label for r in plain.train] == [r.label for r in cropped.train]
    assert plain.train[0].load().shape == (60, 80, 3)
    assert cropped.train[0].load().shape == (30, 60, 3)  # 40x20 box at (20,10), x1.5 about (40, 20)
    assert not {r.uid for r in plain.train} & {r.uid for r in cropped.train}  # crops are cached apart
    assert cropped.train[0].relpath.endswith("#crop:1.5:20,10,40,20")
    import pickle
    assert pickle.loads(pickle.dumps(cropped.train[0].loader))().shape == (30, 60, 3)  # DataLoader workers


def test_crop_box_clips_to_the_image():
    img = np.arange(10 * 20 * 3, dtype=np.uint8).reshape(10, 20, 3)
    assert crop_box(img, (0, 0, 20, 10), 1.5).shape == (10, 20, 3)
    assert crop_box(img, (15, 5, 4, 4), 3.0).shape == (9, 9, 3)  # x 11..20 (clipped), y 1..10 (clipped)
    assert crop_box(img, (2, 2, 4, 4), 1.0).tolist() == img[2:6, 2:6].tolist()


# -- MIT Indoor-67 ------------------------------------------------------------------------------------------

def indoor_tree(root: Path, missing: bool = False) -> Path:
    base = root / "Images"
    for c in ("kitchen", "bar"):
        for i in range(4):
            png(base / c / f"{c}_{i}.jpg", hash((c, i)) % 60000)
    (root / "TrainImages.txt").write_text("kitchen/kitchen_0.jpg\nkitchen/kitchen_1.jpg\nbar/bar_0.jpg\nbar/bar_1.jpg\n")
    (root / "TestImages.txt").write_text("kitchen/kitchen_2.jpg\nbar/bar_2.jpg\n" + ("bar/gone.jpg\n" if missing else ""))
    return root


def test_indoor67_official_lists(tmp_path):
    indoor_tree(tmp_path / "indoor67")
    assert detect_layout(tmp_path / "indoor67") == "indoor67"
    task = resolve_task("indoor67", [str(tmp_path)])
    assert task.protocol.name == "given" and task.family == "scene"
    split = task.split(0, 0)
    assert len(split.train) == 4 and len(split.test) == 2  # unlisted images (*_3.jpg) are not read
    indoor_tree(tmp_path / "broken", missing=True)
    with pytest.raises(FeatbenchError, match="1 listed image\\(s\\) missing: bar/gone.jpg"):
        read_any(tmp_path / "broken")


# -- plain layouts still work -----------------------------------------------------------------------------------

def test_image_folder_and_listing(tmp_path):
    for g in ("train", "test"):
        for c in ("a", "b"):
            for i in range(2):
                png(tmp_path / "plain" / g / c / f"{i}.png", hash((g, c, i)) % 60000)
    assert detect_layout(tmp_path / "plain") == "imagefolder"
    ds = read_any(tmp_path / "plain")
    assert ds.source == "imagefolder" and len(ds.records) == 8
    assert [r.uid for r in ds.records] == [r.uid for r in read_dataset(tmp_path / "plain").records]
    cub_tree(tmp_path / "cub")
    listed = dict(available_tasks([str(tmp_path)]))
    assert listed["cub"].startswith("cub200-2011 layout") and listed["plain"].startswith("8 images")


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "datasets").is_dir(), reason=f"real-data check: {SHARED / 'datasets'} is absent")
def test_shared_datasets_read_through_read_any():
    for name in ("caltech101_mini", "cub200_mini", "scene15_mini", "office_caltech10"):
        folder = SHARED / "datasets" / name
        assert detect_layout(folder) == "manifest"
        ds = read_any(folder)
        assert ds.identity == read_dataset(folder).identity
