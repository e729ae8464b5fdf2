"""Reports: tables, figures, and self-contained HTML / Markdown pages from run folders.

* :func:`build_report` (``featbench report``, and the end of ``featbench run``);
* :func:`featbench.reports.sections.register_section`: add a section (e.g. the speed page);
* :mod:`featbench.reports.corpus`: the committed results corpus and RESULTS.md;
* :mod:`featbench.reports.anchors`: published numbers shown beside matching rows (only compared);
* :mod:`featbench.reports.reproductions`: published tables reproduced from published feature files;
* :mod:`featbench.reports.embedding`: the features-sample format for the t-SNE figure.
"""
from .build import build_report
from .sections import Section, register_section

__all__ = ["build_report", "register_section", "Section"]
