"""Fine-tuning as an evaluation of a ``cnn:`` extractor, beside the linear probe.

Selected like a classifier (``--classifiers logreg,finetune-head,finetune-all``) and run on the
same tasks, splits, trials and seeds as the probe:

* ``finetune-head``: a new linear head plus the network's last stage are trained (the stage, being
  pretrained, at the backbone rate below); everything below stays frozen (and in eval mode).
* ``finetune-all``: every layer is trained; the pretrained layers at a tenth of the head's
  learning rate.

The new head starts at the linear probe's solution (``head_init="probe"``, LP-FT: Kumar et al.
2022): on scene15_mini and cub200_mini, three epochs from a random head scored 50-75 % where the
probe scores 85-97 %; from the probe's head 72-94 % (README, "Fine-tuning"). ``head_init=random``
keeps the plain recipe.

The recipe (:data:`RECIPE`, recorded with every result) is the common small-data one: AdamW,
one warm-up epoch then a cosine decay to zero, batches of 32, ``RandomResizedCrop`` (scale 0.35-1)
and horizontal flips for training, the extractor's own centre-crop preprocessing for held-out and
test images. BatchNorm statistics are frozen by default (``bn="eval"``): with batches of a few
dozen images from many classes, batch statistics are noisy estimates of the pretrained ones.

Model selection uses the training split only: a stratified fifth of it (seeded) is held out, the
epoch count with the best held-out accuracy is chosen, and the model is retrained on the whole
training split for that many epochs (as C is chosen by CV, then refitted). With fewer than two
training images in some class nothing can be held out; the full schedule is used and the record
says so (``cv_score`` is NaN). The test split is never looked at before the final scoring.

Seeds fix the held-out draw, the head's initialisation, the augmentations and the batch order;
``torch.use_deterministic_algorithms`` is on where torch allows it (warn-only). On CUDA the
forward and backward passes run under autocast (bfloat16 where supported).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import train_test_split
from torchvision.transforms import v2

from featbench.classifier import Evaluation
from featbench.errors import FeatbenchError
from featbench.registry import Registry

#: name -> what it trains (the ``kind`` argument of :func:`finetune_evaluate`); selected with
#: ``--classifiers`` like a classifier, listed by ``featbench list finetuning``
FINETUNING: Registry[str] = Registry("fine-tuning evaluation")
FINETUNING.register("finetune-head", "head", summary="fine-tune a new linear head plus the network's last stage")
FINETUNING.register("finetune-all", "all",
                    summary="fine-tune every layer (pretrained layers at a tenth of the head's learning rate)")

#: The documented recipe; every field lands in the result record (``recipe`` column, JSON).
RECIPE: dict[str, Any] = {
    "optimizer": "adamw", "lr_head": 1e-3, "backbone_lr_factor": 0.1, "weight_decay": 0.05,
    "schedule": "warmup1-cosine", "epochs": 10, "batch_size": 32, "rrc_scale": (0.35, 1.0),
    "flip": True, "bn": "eval", "holdout": 0.2, "head_init": "probe",
}


#: Recipe fields a fine-tuning spec may override (``finetune-head:bn=train,epochs=20``), with the
#: type each must have; the rest of :data:`RECIPE` is the recipe's fixed shape.
RECIPE_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "epochs": int, "batch_size": int, "lr_head": (int, float), "backbone_lr_factor": (int, float),
    "weight_decay": (int, float), "bn": str, "holdout": (int, float), "flip": bool, "head_init": str,
}


def is_finetune(spec: str) -> bool:
    """Whether a ``--classifiers`` entry is a fine-tuning evaluation (with or without recipe options)."""
    return spec.partition(":")[0] in FINETUNING


def parse_finetune(spec: str) -> tuple[str, dict[str, Any]]:
    """``"finetune-head:bn=train,epochs=5"`` -> ``("finetune-head", {"bn": "train", "epochs": 5})``;
    a FeatbenchError names the spec and the option that is not a recipe field or has the wrong type."""
    from featbench.options import parse_options

    name, _, text = spec.partition(":")
    FINETUNING.get(name)
    overrides = parse_options(text, f"classifier '{spec}'")
    for key, value in overrides.items():
        want = RECIPE_OPTIONS.get(key)
        if want is None:
            raise FeatbenchError(f"classifier '{spec}': unknown recipe option '{key}'; known: {', '.join(RECIPE_OPTIONS)}")
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise FeatbenchError(f"classifier '{spec}': option '{key}' must be {getattr(want, '__name__', 'a number')}, "
                                 f"not {value!r}")
    if overrides.get("bn", "eval") not in ("eval", "train"):
        raise FeatbenchError(f"classifier '{spec}': bn must be 'eval' (frozen statistics) or 'train', not {overrides['bn']!r}")
    if overrides.get("epochs", 1) < 1 or overrides.get("batch_size", 1) < 1:
        raise FeatbenchError(f"classifier '{spec}': epochs and batch_size must be at least 1")
    if overrides.get("head_init", "random") not in ("random", "probe"):
        raise FeatbenchError(f"classifier '{spec}': head_init must be 'random' or 'probe' (the linear probe's "
                             f"weights, i.e. LP-FT), not {overrides['head_init']!r}")
    if not 0 <= overrides.get("holdout", 0) < 1:
        raise FeatbenchError(f"classifier '{spec}': holdout must be in [0, 1)")
    return name, overrides


@dataclasses.dataclass
class FinetuneResult:
    evaluation: Evaluation
    recipe: dict[str, Any]
    epochs: int               # the chosen epoch count (the refit's schedule length)
    train_s: float            # seconds spent training, selection and refit together
    train_img_per_s: float    # training images (forward + backward) per second
    device: str


# -- the network -----------------------------------------------------------------------------

def _replace_module(net: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(net.get_submodule(parent_name) if parent_name else net, child, new)


def new_head(net: torch.nn.Module, head_name: str, n_classes: int) -> None:
    """Replace the ImageNet classifier module by a fresh one with ``n_classes`` outputs."""
    if hasattr(net, "reset_classifier"):  # timm
        net.reset_classifier(n_classes)
        return
    old = net.get_submodule(head_name)
    if isinstance(old, torch.nn.Linear):
        _replace_module(net, head_name, torch.nn.Linear(old.in_features, n_classes))
    elif isinstance(old, torch.nn.Conv2d):  # SqueezeNet's 1x1 convolution classifier
        _replace_module(net, head_name, torch.nn.Conv2d(old.in_channels, n_classes, kernel_size=1))
    else:
        raise FeatbenchError(f"fine-tuning: cannot replace classifier module '{head_name}' ({type(old).__name__})")


def last_stage(net: torch.nn.Module, head_name: str) -> str:
    """Name of the network's last stage: timm's last feature stage (``blocks.6`` in EfficientNet),
    else the last parameterised block of the trunk before the classifier (``layer4`` in ResNet,
    ``features.12`` in MobileNet/VGG-style ``features`` sequences)."""
    info = getattr(net, "feature_info", None)
    if info is not None:
        return info[-1]["module"] if isinstance(info, list) else info.module_name()[-1]
    head_top = head_name.split(".")[0]
    trunk = [(n, m) for n, m in net.named_children()
             if n != head_top and any(True for _ in m.parameters())]
    if not trunk:
        raise FeatbenchError("fine-tuning: no trainable trunk before the classifier")
    name, module = trunk[-1]
    if len(trunk) == 1 or not any(True for _ in module.named_children()):
        inner = [(f"{name}.{n}", m) for n, m in module.named_children() if any(True for _ in m.parameters())]
        if inner:
            return inner[-1][0]
    return name


def trainable_parameters(net: torch.nn.Module, kind: str, head_name: str) -> tuple[list, list]:
    """(head-rate parameters, backbone-rate parameters); the rest is frozen. The new head learns at
    the head's rate; every pretrained layer that trains (all of them, or the last stage) at the
    backbone rate (at the head's rate the last stage drifted from its features: scene15_mini 71 %
    with the head started at the probe's 85 %)."""
    names = [n for n, _ in net.named_parameters()]
    in_head = [n.startswith(head_name + ".") for n in names]
    if kind == "finetune-all":
        chosen = set(names)
    else:
        stage = last_stage(net, head_name)
        first = next((i for i, n in enumerate(names) if n.startswith(stage + ".")), None)
        if first is None:
            raise FeatbenchError(f"fine-tuning: last stage '{stage}' has no parameters")
        chosen = set(names[first:]) | {n for n, h in zip(names, in_head) if h}
        for n, p in net.named_parameters():
            p.requires_grad_(n in chosen)
    params = list(net.parameters())
    return ([p for p, h in zip(params, in_head) if h],
            [p for n, p, h in zip(names, params, in_head) if n in chosen and not h])


def _set_train_mode(net: torch.nn.Module, trainable: set[int], bn: str) -> None:
    """Modules with a trainable parameter train; frozen ones, and BatchNorm when ``bn == "eval"``,
    stay in eval mode (running statistics unchanged). A module without parameters of its own
    (dropout, drop-path, a container such as the network itself, whose flag timm's head dropout
    reads) trains when it holds a trainable parameter or sits in a module that trains.

    Each module's flag is set on its own (``training``, not ``train()``, which recurses): until
    2026-12-04 the network's own ``train(True)`` put every frozen BatchNorm below the last stage
    in train mode under ``finetune-head``, so batch statistics of small augmented batches replaced
    the pretrained ones (scene15_mini: the head scored 68.5 % where the probe it started from
    scored 85.9 %)."""
    holds: dict[str, bool] = {}  # module name -> whether it holds a trainable parameter
    for name, module in net.named_modules():  # parents before their children
        params = list(module.parameters())
        holds[name] = any(id(p) in trainable for p in params)
        own = list(module.parameters(recurse=False))
        if own:
            is_bn = isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
            flag = any(id(p) in trainable for p in own) and not (is_bn and bn == "eval")
        elif params:  # a container
            flag = holds[name]
        else:  # dropout, drop-path, activations: as the module they sit in
            flag = holds.get(name.rpartition(".")[0], False)
        module.training = flag


# -- data --------------------------------------------------------------------------------------

class _Images(torch.utils.data.Dataset):
    def __init__(self, items: Sequence[Any], labels: Sequence[int], transform) -> None:
        self.items, self.labels, self.transform = list(items), list(labels), transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from PIL import Image

        item = self.items[i]
        pixels = item if isinstance(item, np.ndarray) else item.load()
        return self.transform(Image.fromarray(pixels)), self.labels[i]


def transforms_for(prep, recipe: dict[str, Any]):
    """(training transform, evaluation transform) from the extractor's preprocessing."""
    interp = v2.InterpolationMode(prep.interpolation)
    norm = [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(prep.mean, prep.std)]
    resize = v2.Resize((prep.resize, prep.resize) if prep.squash else prep.resize, interpolation=interp)
    train = [v2.RandomResizedCrop(prep.crop, scale=tuple(recipe["rrc_scale"]), interpolation=interp)]
    if recipe["flip"]:
        train.append(v2.RandomHorizontalFlip())
    return v2.Compose(train + norm), v2.Compose([resize, v2.CenterCrop(prep.crop)] + norm)


def _loader(items, labels, transform, batch_size, shuffle, seed, workers):
    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(_Images(items, labels, transform), batch_size=batch_size, shuffle=shuffle,
                                       generator=gen, num_workers=workers, drop_last=False,
                                       persistent_workers=False)


# -- training ----------------------------------------------------------------------------------

def _autocast(device: torch.device):
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def _predict(net, loader, device) -> np.ndarray:
    net.eval()
    out = []
    with torch.inference_mode(), _autocast(device):
        for x, _ in loader:
            out.append(net(x.to(device)).float().argmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def init_head_from_probe(net: torch.nn.Module, head_name: str, items, labels, n_classes: int, eval_tf,
                         device: torch.device, seed: int) -> None:
    """LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"): start the new
    head at the linear probe's solution instead of at random. The head's inputs for the training
    items (evaluation transform, network in eval mode) are fitted with featbench's logistic
    regression (C by the usual CV, the default solver; its weights mapped back to the original
    feature space), and the weights are copied into the head. Few fine-tuning steps on
    little data then start from the probe's accuracy instead of from chance."""
    from featbench.classifier import fit_evaluate, original_space_weights

    head = net.get_submodule(head_name)
    if not isinstance(head, torch.nn.Linear):
        raise FeatbenchError(f"head_init=probe needs a linear classifier module, not {type(head).__name__} "
                             f"('{head_name}')")
    inputs: list[np.ndarray] = []
    hook = head.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().float().cpu().numpy()))
    try:
        net.eval()
        with torch.inference_mode(), _autocast(device):
            for x, _ in _loader(items, labels, eval_tf, 64, False, seed, 0):
                net(x.to(device))
    finally:
        hook.remove()
    X, y = np.concatenate(inputs).reshape(len(items), -1), np.asarray(labels)
    model = fit_evaluate(X, y, X, y, kind="logreg", seed=seed).model
    W, b = original_space_weights(model)
    full_W, full_b = np.zeros((n_classes, X.shape[1])), np.full(n_classes, -1e4)  # classes absent here: never predicted
    present = np.unique(y)
    full_W[present], full_b[present] = W, b
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(full_W).to(head.weight))
        head.bias.copy_(torch.from_numpy(full_b).to(head.bias))


def _train(cnn, kind, n_classes, items, labels, epochs, recipe, seed, device, valid=None):
    """Train a fresh copy for ``epochs``; with ``valid`` (items, labels), also return the held-out
    accuracy after every epoch. Returns (net, accuracies, images seen)."""
    torch.manual_seed(seed)
    net = cnn.pretrained_model()
    head_name = cnn.classifier_module_name(net)
    new_head(net, head_name, n_classes)
    head, body = trainable_parameters(net, kind, head_name)
    net.to(device)
    train_tf, eval_tf = transforms_for(cnn.preprocess, recipe)
    if recipe["head_init"] == "probe":
        init_head_from_probe(net, head_name, items, labels, n_classes, eval_tf, device, seed)
    groups = [{"params": head, "lr": recipe["lr_head"]}]
    if body:
        groups.append({"params": body, "lr": recipe["lr_head"] * recipe["backbone_lr_factor"]})
    opt = torch.optim.AdamW(groups, weight_decay=recipe["weight_decay"])
    workers = cnn.num_workers if len(items) > recipe["batch_size"] else 0
    loader = _loader(items, labels, train_tf, recipe["batch_size"], True, seed, workers)
    steps = max(1, epochs * len(loader))
    warm = len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    trainable = {id(p) for g in groups for p in g["params"]}
    loss_fn = torch.nn.CrossEntropyLoss()
    accs, seen = [], 0
    valid_loader = _loader(*valid, eval_tf, 64, False, seed, 0) if valid else None
    for _ in range(epochs):
        _set_train_mode(net, trainable, recipe["bn"])
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with _autocast(device):
                loss = loss_fn(net(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
        if valid_loader is not None:
            accs.append(float(accuracy_score(valid[1], _predict(net, valid_loader, device))))
    return net, accs, seen


@contextlib.contextmanager
def _deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def finetune_evaluate(cnn, kind: str, train_items: Sequence[Any], y_train: Sequence[int],
                      test_items: Sequence[Any], y_test: Sequence[int], n_classes: int, seed: int = 0,
                      recipe: dict[str, Any] | None = None) -> FinetuneResult:
    """Fine-tune ``cnn`` (a built ``cnn:`` extractor) on the training items, score the test items."""
    FINETUNING.get(kind)  # an unknown kind is a FeatbenchError naming the known ones
    if getattr(cnn, "family", "") != "cnn":
        raise FeatbenchError(f"{kind}: only cnn: extractors can be fine-tuned, not '{cnn.spec}'")
    recipe = {**RECIPE, **(recipe or {})}
    device = torch.device(cnn.device)
    y_train = np.asarray(y_train, dtype=np.int64)
    start = time.perf_counter()
    seen = 0
    _, counts = np.unique(y_train, return_counts=True)
    with _deterministic():
        if counts.min() >= 2 and recipe["holdout"] > 0:
            idx = np.arange(len(y_train))
            fit_i, val_i = train_test_split(idx, test_size=max(recipe["holdout"], len(counts) / len(idx)),
                                            stratify=y_train, random_state=seed)
            _, accs, n = _train(cnn, kind, n_classes, [train_items[i] for i in fit_i], y_train[fit_i].tolist(),
                                recipe["epochs"], recipe, seed, device,
                                valid=([train_items[i] for i in val_i], y_train[val_i].tolist()))
            seen += n
            best = int(np.argmax(accs))  # ties: the shorter schedule
            epochs, cv_score = best + 1, accs[best]
        else:
            epochs, cv_score = recipe["epochs"], float("nan")
        net, _, n = _train(cnn, kind, n_classes, list(train_items), y_train.tolist(), epochs, recipe, seed, device)
        seen += n
        train_s = time.perf_counter() - start
        _, eval_tf = transforms_for(cnn.preprocess, recipe)
        y_pred = _predict(net, _loader(list(test_items), list(y_test), eval_tf, 64, False, seed, 0), device)
    ev = Evaluation(classifier=kind, C=float("nan"), cv_score=float(cv_score),
                    top1=float(accuracy_score(y_test, y_pred)),
                    mean_class_acc=float(balanced_accuracy_score(y_test, y_pred)),
                    fit_s=time.perf_counter() - start, y_pred=y_pred)
    return FinetuneResult(ev, recipe, epochs, train_s, seen / train_s if train_s > 0 else float("nan"), str(device))
