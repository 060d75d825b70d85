"""The custom-space example of docs/spaces.md, run as written."""
import re
from pathlib import Path

from lightning_epe.search import ArchitectureSearch

DOC = Path(__file__).resolve().parents[2] / "docs" / "spaces.md"


def test_documented_custom_space_example_runs(tiny_data):
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)[-1]
    namespace: dict = {}
    exec(code, namespace)
    space = namespace["WidthSpace"]()
    result = ArchitectureSearch(space, search_strategy="exhaustive", budget=None, accelerator="cpu",
                                progress=False).run(tiny_data)
    assert [r["candidate"] for r in result.records] == [8, 16, 32, 64]
    assert all(r["error"] is None for r in result.records) and result.best["candidate"] in space.widths
