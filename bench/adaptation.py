"""Domain-adaptation methods applied to features before the classifier.

Each method takes the source training features, the labelled target features (empty unless
the protocol gives some) and the target test features, and returns what the classifier is
trained and tested on: ``(X_train, y_train, X_test)``.

* ``none``: the protocol's own training set as is (source-only, or source+target when the
  protocol adds labelled target images).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from featbench.errors import FeatbenchError

Method = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]
METHODS: dict[str, Method] = {}


def method(name: str) -> Callable[[Method], Method]:
    def deco(fn: Method) -> Method:
        METHODS[name] = fn
        return fn
    return deco


@method("none")
def no_adaptation(Xs, ys, Xt_lab, yt_lab, Xt_test, seed=0):
    return np.concatenate([Xs, Xt_lab]), np.concatenate([ys, yt_lab]), Xt_test


def apply(name: str, Xs, ys, Xt_lab, yt_lab, Xt_test, seed: int = 0):
    if name not in METHODS:
        raise FeatbenchError(f"unknown adaptation method '{name}'; known: {', '.join(sorted(METHODS))}")
    return METHODS[name](Xs, ys, Xt_lab, yt_lab, Xt_test, seed=seed)
