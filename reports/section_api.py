"""What a report section is (:class:`Section`, :class:`Figure`, :class:`ReportContext`) and the
registry of section builders (:data:`SECTIONS`); the built-in builders live in ``sections_*.py``
and :mod:`featbench.reports.sections` imports them all.

Each builder takes the :class:`ReportContext` and returns a :class:`Section` (or None: left out).

Extension point: other modules add sections with :func:`register_section`, e.g. the speed
page::

    from featbench.reports.sections import Section, register_section

    @register_section("speed-history", order=75)
    def speed_history(ctx):
        speeds = [run.speed for run in ctx.runs.runs if run.speed]   # parsed speed.json files
        if not speeds:
            return None                                               # section left out
        fig = ...                                                    # a matplotlib Figure
        return Section("speed-history", "Speed history", html=ctx.figure(fig, "speed-history", "...").html,
                       md="...")

``order`` places the section (built-ins use 10, 20, ... 130; ``featbench list sections``); ids are unique. A builder
that raises does not break the report: its section says what failed.
"""
from __future__ import annotations

import dataclasses
import traceback
from collections import Counter
from pathlib import Path
from typing import Callable

import pandas as pd

from featbench.atomic import OutputWriteError, atomic_write_bytes
from featbench.registry import Registry, first_line

from . import figures as figs
from .data import RunSet
from .tables import esc


@dataclasses.dataclass
class Section:
    id: str
    title: str
    html: str = ""
    md: str = ""
    order: float = 100.0


@dataclasses.dataclass
class Figure:
    name: str
    alt: str
    uri: str
    relpath: str

    @property
    def html(self) -> str:
        return f"<figure><img alt='{esc(self.alt)}' src='{self.uri}'><figcaption>{esc(self.alt)}</figcaption></figure>"

    @property
    def md(self) -> str:
        return f"![{self.alt}]({self.relpath})"


@dataclasses.dataclass
class ReportContext:
    runs: RunSet
    agg: pd.DataFrame
    out: Path
    groups: pd.DataFrame
    figures: list[Figure] = dataclasses.field(default_factory=list)
    extra_files: list[Path] = dataclasses.field(default_factory=list)

    @property
    def df(self) -> pd.DataFrame:
        return self.runs.df

    def figure(self, fig, name: str, alt: str) -> Figure:
        """Save ``fig`` as ``figures/<name>.png`` (for report.md) and return it with its data URI (for HTML)."""
        png = figs.png_bytes(fig)
        folder = self.out / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / f"{name}.png", png)
        f = Figure(name=name, alt=alt, uri=figs.data_uri(png), relpath=f"figures/{name}.png")
        self.figures.append(f)
        return f

    @property
    def primary_classifier(self) -> str:
        c = self.agg.loc[self.agg["primary"], "classifier"]
        return Counter(c).most_common(1)[0][0] if len(c) else "logreg"


Builder = Callable[[ReportContext], "Section | None"]
#: section id -> builder; each entry's ``order`` (metadata) places it on the page
SECTIONS: Registry[Builder] = Registry(
    "report section", entry_points="featbench.report_sections",
    add_plugin=lambda name, fn: register_section(name, order=getattr(fn, "order", 100.0))(fn))


def register_section(section_id: str, order: float = 100.0) -> Callable[[Builder], Builder]:
    """Decorator: add a section builder under a new id; ``order`` sorts sections on the page."""
    def deco(fn: Builder) -> Builder:
        summary = f"[{order:g}] {first_line(fn.__doc__)}".strip()
        return SECTIONS.register(section_id, fn, summary=summary, order=order)
    return deco


def registered() -> list[tuple[float, str, Builder]]:
    return sorted(((e.meta["order"], sid, e.obj) for sid, e in SECTIONS.items()), key=lambda r: r[0])


def build_sections(ctx: ReportContext) -> list[Section]:
    out = []
    for order, sid, fn in registered():
        try:
            sec = fn(ctx)
        except OutputWriteError:  # a full disk stops the report; it must not look finished
            raise
        except Exception as exc:  # one broken section must not lose the whole report
            tb = traceback.format_exc(limit=3)
            sec = Section(sid, sid.replace("-", " ").capitalize(),
                          html=f"<p class='warn'>This section failed to build: {esc(type(exc).__name__)}: "
                               f"{esc(exc)}</p><pre>{esc(tb)}</pre>",
                          md=f"This section failed to build: `{type(exc).__name__}: {exc}`")
        finally:
            figs.close_all()
        if sec is not None:
            sec.order = order
            out.append(sec)
    return out


def absent(sid: str, title: str, why: str) -> Section:
    return Section(sid, title, html=f"<p class='absent'>{esc(why)}</p>", md=f"_{why}_")
