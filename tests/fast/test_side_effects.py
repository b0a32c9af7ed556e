"""Importing embedlab leaves the host process as it was; settings apply only inside their scope."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from PIL import Image

from embedlab import images
from embedlab.settings import Settings, applied

ROOT = Path(__file__).resolve().parents[2]


def test_importing_every_module_changes_no_warnings_logging_or_pillow_setting() -> None:
    script = textwrap.dedent(
        """
        import logging, pkgutil, importlib, sys, warnings
        import numpy  # third-party libraries may add their own filters on import; only ours count
        from PIL import Image, ImageFile
        for name in ("apsw", "sqlite_vec", "pydicom", "cv2", "scipy.ndimage"):
            try:
                importlib.import_module(name)
            except ImportError:
                pass
        before = (list(warnings.filters), Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
        pydicom = logging.getLogger("pydicom")
        handlers = list(pydicom.handlers)
        import embedlab
        # embedlab.models is the torch code itself (imported only to build or convert a model).
        skip = {"embedlab.cluster", "embedlab.models", "embedlab.calibration", "embedlab.__main__"}
        for info in pkgutil.iter_modules(embedlab.__path__, "embedlab."):
            if info.name not in skip:
                importlib.import_module(info.name)
        after = (list(warnings.filters), Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
        assert before == after, (before, after)
        assert pydicom.propagate and pydicom.handlers == handlers
        assert "torch" not in sys.modules, "a module imported torch at import time"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_settings_apply_inside_the_scope_and_are_restored_after() -> None:
    import logging
    import warnings

    filters, bomb = list(warnings.filters), Image.MAX_IMAGE_PIXELS
    default_limit = images.decode_settings()
    with applied(Settings(max_pixels=1234, log_paths=True)):
        assert images.decode_settings() == (1234, True)
        assert images.path_token("a/b.png") == "a/b.png"
        assert not logging.getLogger("pydicom").propagate
        assert Image.MAX_IMAGE_PIXELS == 64 * 1234
    assert images.decode_settings() == default_limit
    assert images.path_token("a/b.png").startswith("file:")
    assert list(warnings.filters) == filters
    assert Image.MAX_IMAGE_PIXELS == bomb  # noqa: SIM300
    assert logging.getLogger("pydicom").propagate


def test_the_readme_design_section_lists_every_module() -> None:
    """A newcomer reads the pipeline off the README: a module it does not list is one nobody finds."""
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    modules = sorted(p.name for p in (root / "embedlab").glob("*.py") if p.name != "__main__.py")
    assert [m for m in modules if f"embedlab/{m}" not in readme] == []
