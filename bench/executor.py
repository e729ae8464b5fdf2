"""Where extraction runs: one interface, so the runner does not know which executor it uses.

An executor turns ``(extractor, items, batch_size)`` into the stream the runner consumes,
``(indices, {output: float32 [len(indices), d]}, {index: reason})`` per batch, in any order:
the items done, their features, and the items that would not decode. The runner keeps the
cache, the skips and the timing; the executor only computes.

* :class:`LocalExecutor` (``--executor local``, the default): the extractor's own
  ``iter_batches`` in this process, exactly as before the seam existed.
* :class:`~featbench.ray_executor.RayExecutor` (``--executor ray [--ray-address ADDRESS]
  [--ray-workers N]``): the same batches spread over a Ray cluster's actors.

Learned extractors are fitted by the runner, in this process, on training images only,
before any executor sees them; an executor only ever transforms.
"""
from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence

from featbench.errors import FeatbenchError
from featbench.features import Extractor
from featbench.features.base import Batch

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    name: str

    def batches(self, extractor: Extractor, items: Sequence[Any], batch_size: int) -> Iterator[Batch]:
        """Features of ``items`` batch by batch (indices into ``items``), in any order."""
        ...

    def describe(self) -> dict[str, Any]:
        """What ran the extraction, for run.json."""
        ...

    def close(self) -> None:
        """Release workers (the cluster itself is left running when it was not started here)."""
        ...


class LocalExecutor:
    """Extraction in this process (the extractor's own threads / DataLoader workers)."""

    name = "local"

    def batches(self, extractor: Extractor, items: Sequence[Any], batch_size: int) -> Iterator[Batch]:
        return extractor.iter_batches(items, batch_size)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def close(self) -> None:
        pass


def make_executor(name: str = "local", address: str | None = None, workers: int | None = None,
                  device: str = "auto") -> Executor:
    """The executor named ``name``; options that only apply to Ray are refused with local."""
    if name == "local":
        if address or workers:
            raise FeatbenchError("--ray-address / --ray-workers need --executor ray")
        return LocalExecutor()
    if name == "ray":
        if workers is not None and workers < 1:
            raise FeatbenchError(f"--ray-workers must be at least 1, not {workers}")
        from featbench.ray_executor import RayExecutor

        return RayExecutor(address=address, workers=workers, device=device)
    raise FeatbenchError(f"--executor: unknown '{name}'; choose {' or '.join(EXECUTORS)}")
