"""Report sections: the section type and registry (:mod:`.section_api`) and every built-in builder.

Importing this module registers the built-in sections, in page order (``featbench list sections``):

* :mod:`.sections_accuracy`: summary (10), how to read (20), task families (30), per task (40),
  published anchors (50), layer study (60);
* :mod:`.reproductions`: published tables reproduced from published feature files (52);
  :mod:`.adaptation_effects`: when each domain-adaptation method helps or hurts (53);
* :mod:`.sections_transfer`: learning curves (65), the transfer decision map (67);
* :mod:`.sections_speed`: accuracy against images/s (70), ``featbench speed``'s page (75);
* :mod:`.sections_detail`: domain matrices (80), t-SNE embedding (90), confusion matrices (100),
  comparability (110), skipped images (120), runs and provenance (130).

A new section is one decorated function in one module (see :mod:`.section_api`), e.g.::

    from featbench.reports.sections import Section, register_section

    @register_section("my-section", order=85)
    def my_section(ctx):
        return Section("my-section", "My section", html="<p>...</p>", md="...")
"""
from __future__ import annotations

from . import sections_accuracy, sections_detail, sections_speed, sections_transfer  # noqa: F401  (registration)
from . import adaptation_effects, reproductions  # noqa: F401  (registration: 52 reproduced tables, 53 adaptation effects)
from .section_api import (SECTIONS, Builder, Figure, ReportContext, Section, absent, build_sections,  # noqa: F401
                          register_section, registered)
from .sections_detail import domain_matrices  # noqa: F401
from .sections_speed import speed_detail, speed_table  # noqa: F401
