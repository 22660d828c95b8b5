"""The README's Python examples run as written (in a scratch directory): its public calls are a contract."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_examples():
    assert len(_python_blocks()) >= 2


def test_readme_python_examples_run_in_order(tmp_path, monkeypatch):
    """Each block continues the previous one (the token-reduction block uses the first block's model and text)."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for index, block in enumerate(_python_blocks()):
        exec(compile(block, f"README.md python block {index}", "exec"), namespace)
    assert (tmp_path / "my-model" / "model.safetensors").is_file()  # the first block saved a model
    assert namespace["model"].reduction is None  # the last line of the token-reduction block detaches again
