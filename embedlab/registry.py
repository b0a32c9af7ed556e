"""Names the command line needs before (and without) importing torch.

`analyze` and `evaluate` never run a model, so they must not pay for loading
PyTorch just to validate a --backbone choice.
"""

from __future__ import annotations

DEFAULT_BACKBONE = "efficientnet_lite0"
BACKBONES: tuple[str, ...] = ("efficientnet_lite0", "resnet18", "resnet50")


class BackboneError(Exception):
    """A backbone that cannot be built as asked; the message is one line."""
