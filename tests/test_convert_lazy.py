"""The core package never imports transformers, open_clip or timm at import time."""

import subprocess
import sys


def test_import_vlprune_loads_no_reference_library():
    code = ("import sys, vlprune, vlprune.cli, vlprune.models.convert.directory; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'transformers', 'open_clip', 'timm'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
