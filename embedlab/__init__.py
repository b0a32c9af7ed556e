"""embedlab: embed image folders into one SQLite index, search, dedupe, flag anomalies.

    import embedlab
    idx = embedlab.embed("assets/images", "index")
    print(idx.analyze(dup_threshold=0.92, anomaly_top=8).anomalies)

Importing embedlab loads no model and changes no process-wide setting; see
docs/PYTHON_API.md.
"""

__version__ = "0.1.0"

from .api import Index, embed, forget, open, undo
from .errors import EmbedlabError, UsageError
from .results import (
    Analysis,
    CalibrationReport,
    DedupeResult,
    EmbedResult,
    Evaluation,
    ExportResult,
    IndexInfo,
    LeaksResult,
    MarksResult,
    ReportResult,
    SearchHit,
    SearchResult,
    SearchResults,
    UndoResult,
)
from .settings import Settings

__all__ = [
    "Analysis",
    "CalibrationReport",
    "DedupeResult",
    "EmbedResult",
    "EmbedlabError",
    "Evaluation",
    "ExportResult",
    "Index",
    "IndexInfo",
    "LeaksResult",
    "MarksResult",
    "ReportResult",
    "SearchHit",
    "SearchResult",
    "SearchResults",
    "Settings",
    "UndoResult",
    "UsageError",
    "__version__",
    "embed",
    "forget",
    "open",
    "undo",
]
