"""The own-data-module example of docs/data.md, written to a module and used from a YAML recipe."""
import json
import re
from pathlib import Path

import yaml

from lightning_epe.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_documented_data_module_runs_a_search_from_yaml(tmp_path, monkeypatch):
    section = (ROOT / "docs" / "data.md").read_text().split("## Your own data module", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    (tmp_path / "my_data.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    recipe["data"] = {"class_path": "my_data.NoiseImages", "init_args": {"n": 64}}
    recipe["search"].update({"budget": 2, "batch_size": 16, "progress": False, "build_options": {"C": 2, "N": 1}})
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["score", "--config", str(tmp_path / "recipe.yaml"), "--results_dir", str(tmp_path / "out")]) == 0
    records = [json.loads(line) for line in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["error"] is None for r in records)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["data"] == "NoiseImages"
