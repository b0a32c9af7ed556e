"""embedlab: embed image folders into one SQLite index, search, dedupe, flag anomalies."""

__version__ = "0.1.0"
