"""embedlab: embed image folders into one SQLite index, search, dedupe, flag anomalies.

    import embedlab
    idx = embedlab.embed("assets/images", "index")
    print(idx.analyze(dup_threshold=0.92, anomaly_top=8).anomalies)

Importing embedlab loads no model and changes no process-wide setting; see
docs/PYTHON_API.md.
"""

__version__ = "0.1.0"

from .api import Index, embed, forget, open
from .errors import EmbedlabError, UsageError
from .results import (
    Analysis,
    CalibrationReport,
    EmbedResult,
    Evaluation,
    IndexInfo,
    ReportResult,
    SearchHit,
    SearchResult,
    SearchResults,
)
from .settings import Settings

__all__ = [
    "Analysis",
    "CalibrationReport",
    "EmbedResult",
    "EmbedlabError",
    "Evaluation",
    "Index",
    "IndexInfo",
    "ReportResult",
    "SearchHit",
    "SearchResult",
    "SearchResults",
    "Settings",
    "UsageError",
    "__version__",
    "embed",
    "forget",
    "open",
]
