"""Import open_clip for the tests, with the test-only torchvision stand-in when the real one is missing.

The stand-in is on ``sys.path`` only while open_clip is imported, then removed again (with its modules), so
nothing else in the test session (transformers checks for torchvision) ever sees it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

STAND_IN = Path(__file__).parent / "fake_torchvision"


def import_open_clip() -> ModuleType:
    """open_clip, or a pytest skip naming what is missing."""
    try:
        return importlib.import_module("open_clip")
    except ModuleNotFoundError as err:
        if err.name != "torchvision":
            pytest.skip(f"open_clip is not installed ({err}); `make test` installs it")
    sys.modules.pop("open_clip", None)
    sys.path.insert(0, str(STAND_IN))
    try:
        return importlib.import_module("open_clip")
    finally:
        sys.path.remove(str(STAND_IN))
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
