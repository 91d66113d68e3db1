"""The README's Python snippets run as written, in order, in one namespace."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


# The snippets train small top-1 models for 2 epochs: an expert may get no sample, and the layer rightly says so.
@pytest.mark.filterwarnings("ignore:qmoe. experts .* received no sample in the last training epoch:RuntimeWarning")
def test_readme_python_snippets_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    assert namespace["probabilities"].shape == (3, 2)
    assert namespace["reloaded"].predict(namespace["x_train"][:3], verbose=0).shape == (3, 2)
