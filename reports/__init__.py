"""Reports: tables, figures, and self-contained HTML / Markdown pages from run folders."""
from .build import build_report

__all__ = ["build_report"]
