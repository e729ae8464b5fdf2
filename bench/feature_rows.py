"""An extractor output's feature rows by image uid, each with the digest of its bytes, and the
inputs of one evaluation built from them.

The evaluation cache finds a finished evaluation by the digests of its feature rows
(:func:`featbench.evaluation_cache.inputs_digest`), not by the rows themselves. When every row
is already in the feature store, the runner therefore hands out :class:`FeatureRows` whose
digests come from the store's index and whose rows are read only when something uses one: the
matrices of a fit that is not cached, the report's feature sample (only the rows it keeps). On the full decaf protocol a
cached re-run had spent 125 of its 335 s reading and checking rows that no fit then needed.
"""
from __future__ import annotations

import functools
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from featbench.errors import FeatbenchError
from featbench.evaluation_cache import inputs_digest
from featbench.store import row_digest


class FeatureRows(Mapping[str, np.ndarray]):
    """uid -> feature row, with :meth:`digest` per uid and ``layout`` (``"<dtype>[<dim>]"``).

    :meth:`computed` wraps rows in memory (digests computed when first asked for);
    :meth:`stored` lists rows by their stored digests and calls ``load`` for the rows themselves
    on first access; :meth:`some` reads only the rows it is asked for (``load_some``)."""

    def __init__(self, layout: str, digests: dict[str, bytes], rows: Mapping[str, np.ndarray] | None,
                 load: Callable[[], Mapping[str, np.ndarray]] | None = None,
                 load_some: Callable[[Sequence[str]], Mapping[str, np.ndarray]] | None = None) -> None:
        self.layout, self._digests, self._rows, self._load, self._load_some = layout, digests, rows, load, load_some
        self._listed = digests if rows is None else rows  # its keys are the uids this holds

    @classmethod
    def computed(cls, rows: Mapping[str, np.ndarray]) -> "FeatureRows":
        first = next(iter(rows.values()), None)
        layout = "" if first is None else f"{first.dtype.str}[{first.shape[0]}]"
        return cls(layout, {}, rows)

    @classmethod
    def stored(cls, layout: str, digests: dict[str, bytes], load: Callable[[], Mapping[str, np.ndarray]],
               load_some: Callable[[Sequence[str]], Mapping[str, np.ndarray]] | None = None) -> "FeatureRows":
        return cls(layout, digests, None, load, load_some)

    @property
    def read(self) -> bool:
        """Whether the rows are in memory."""
        return self._rows is not None

    def rows(self) -> Mapping[str, np.ndarray]:
        if self._rows is None:
            rows = self._load()
            lost = [u for u in self._listed if u not in rows]
            if lost:
                raise FeatbenchError(f"{len(lost)} feature row(s) listed in the cache could neither be read back "
                                     f"nor computed again (first image uid {lost[0]}); run the command again")
            self._rows = rows
        return self._rows

    def some(self, uids: Sequence[str]) -> dict[str, np.ndarray]:
        """The rows of ``uids`` only. Rows not yet in memory are read through ``load_some`` when
        there is one (the report's feature sample wants 500 test rows, not every row of a task);
        if any of them cannot be read back intact, every row is loaded (and the damaged ones
        computed again) as on first access."""
        if self._rows is None and self._load_some is not None:
            got = self._load_some(list(uids))
            if all(u in got for u in uids):
                return {u: got[u] for u in uids}
        rows = self.rows()
        return {u: rows[u] for u in uids}

    def digest(self, uid: str) -> bytes:
        if uid not in self._digests:
            self._digests[uid] = row_digest(self.rows()[uid])
        return self._digests[uid]

    def __getitem__(self, uid: str) -> np.ndarray:
        return self.rows()[uid]

    def __contains__(self, uid: object) -> bool:
        return uid in self._listed

    def __iter__(self) -> Iterator[str]:
        return iter(self._listed)

    def __len__(self) -> int:
        return len(self._listed)


class EvaluationInputs:
    """One evaluation's images with features (training, labelled target, test: ``records``), their
    labels, the digest that identifies them (from row digests alone) and, on first use, their
    matrices ``(Xs, ys, Xt_lab, yt_lab, Xt_test)`` as :func:`featbench.adaptation.apply` takes them."""

    PARTS = ("train", "target_train", "test")

    def __init__(self, rows: FeatureRows, records: dict[str, Sequence], label_index: dict[str, int]) -> None:
        self.rows = rows
        self.records = {p: [r for r in records.get(p, ()) if r.uid in rows] for p in self.PARTS}
        self.labels = {p: np.array([label_index[r.label] for r in recs], dtype=np.int64)
                       for p, recs in self.records.items()}

    @property
    def y_test(self) -> np.ndarray:
        return self.labels["test"]

    @functools.cached_property
    def digest(self) -> str:
        return inputs_digest(self.rows.layout, [(p, [self.rows.digest(r.uid) for r in self.records[p]], self.labels[p])
                                                for p in self.PARTS])

    @functools.cached_property
    def matrices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        def stack(part: str, dim: int | None = None) -> np.ndarray:
            recs = self.records[part]
            if not recs:
                return np.zeros((0, dim or 0), np.float32)
            return np.stack([self.rows[r.uid] for r in recs]).astype(np.float32, copy=False)

        Xs = stack("train")
        return Xs, self.labels["train"], stack("target_train", Xs.shape[1]), self.labels["target_train"], stack("test")
