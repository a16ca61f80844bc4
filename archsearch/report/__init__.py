"""The report: a study's results as figures, a Markdown summary and one HTML page."""

from archsearch._lazy import lazy_exports

_EXPORTS = {
    "FORMATS": "archsearch.report.build",
    "build_report": "archsearch.report.build",
    "ReportData": "archsearch.report.cells",
    "load": "archsearch.report.loading",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
