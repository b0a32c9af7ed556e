"""One exception family for the library, and hints that each front end words its own way.

A caller of the Python API catches `EmbedlabError` and gets one-line messages
that name no command-line flag. What to do next is a `Hint` (a kind and its
values), not text: the library says "open it with backbone resnet18", the CLI
says "use --backbone resnet18". Both wordings of every kind live here, side by
side, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Hint:
    """What the user can do about an error, as data (``kind`` selects the wording)."""

    kind: str
    values: dict[str, str] = field(default_factory=dict)
    sep: str = "; "  # between the message and the advice


# Library wording: Python names (functions, parameters), never flags.
API_HINTS: dict[str, str] = {
    "no_index": "embed a folder into it first (embedlab.embed)",
    "empty_index": "embed a folder into it first (embedlab.embed)",
    "damaged": "embed into a new index folder",
    "other_backbone": "open it with backbone={backbone} or embed into a new index folder",
    "other_recipe": "embed with recipe={recipe} (or leave it out) or into a new index folder",
    "unknown_folder": "Index.info() lists its folders",
    "other_weights": "pass the original weights file or embed into a new index folder",
    "other_precision": "unset EMBEDLAB_PRECISION or embed into a new index folder",
    "needs_usearch": "pip install usearch==2.26.6",
    "no_queries": "queries must be image files (PNG, JPEG, TIFF, DICOM, ...); folders are searched recursively",
    "no_report_queries": "leave queries out or point them at images",
    "report_unwritable": "choose another path",
    "export_queries": "pass queries (a folder, a file or a list of files)",
    "folder_name_taken": "embed into a new index folder",
}

# What a message's subject is called: a parameter in the library, a flag on the command line.
API_SUBJECTS: dict[str, str] = {
    "out": "index folder",
    "ann_always": "ann='always'",
    "report_out": "report file",
    "exclude_same": "exclude_same",
    "keep": "keep",
    "format_priority": "format_priority",
    "action": "action",
    "dest": "dest",
    "what": "what",
    "format": "format",
    "split": "splits",
    "export_out": "out",
}
CLI_SUBJECTS: dict[str, str] = {
    "out": "--out",
    "ann_always": "--ann always",
    "report_out": "--out",
    "exclude_same": "--exclude-same",
    "keep": "--keep",
    "format_priority": "--format-priority",
    "action": "--action",
    "dest": "--dest",
    "what": "--what",
    "format": "--format",
    "split": "--split",
    "export_out": "--out",
}

# Command-line wording of the same kinds (today's messages, byte for byte).
CLI_HINTS: dict[str, str] = {
    "no_index": "run `embedlab embed --images-dir IMAGES --out {index}` first",
    "empty_index": "run `embedlab embed --images-dir IMAGES --out {index}` first",
    "damaged": "embed into a new --out folder",
    "other_backbone": "use --backbone {backbone} or a new --out folder",
    "other_recipe": "use --recipe {recipe} (or leave it out) or a new --out folder",
    "unknown_folder": "`embedlab info --index {index}` lists them",
    "other_weights": "pass the original --weights or use a new --out folder",
    "other_precision": "unset EMBEDLAB_PRECISION or use a new --out folder",
    "needs_usearch": "pip install usearch==2.26.6",
    "no_queries": "--query-dir needs image files (PNG, JPEG, TIFF, DICOM, ...), searched recursively",
    "no_report_queries": "drop --query-dir or point it at images",
    "report_unwritable": "choose another --out",
    "export_queries": "add --query-dir QUERIES",
    "folder_name_taken": "use another --out",
}


class EmbedlabError(Exception):
    """Base of every error embedlab raises on purpose; the message is one line.

    ``message`` is the fact ("no index at idx"); ``hint`` says what to do about it
    and is worded by whoever shows the error (`str()` uses the library wording).
    ``subject`` optionally names what the message is about in front-end terms
    (the CLI turns ``subject="out"`` into ``--out``).
    """

    def __init__(self, message: str, *, hint: Hint | None = None, subject: str | None = None):
        self.message = message
        self.hint = hint
        self.subject = subject
        super().__init__(self.render(API_HINTS, API_SUBJECTS))

    def render(self, hints: dict[str, str], subjects: dict[str, str] | None = None) -> str:
        """The message with the hint in the given wording (``hints``: kind -> template)."""
        text = self.message
        if self.subject is not None and subjects and self.subject in subjects:
            text = f"{subjects[self.subject]} {text}"
        if self.hint is None:
            return text
        template = hints.get(self.hint.kind, "")
        advice = template.format(**self.hint.values) if template else ""
        return f"{text}{self.hint.sep}{advice}" if advice else text


class UsageError(EmbedlabError):
    """An argument the library cannot work with (an empty query folder, a bad regex, k < 1)."""
