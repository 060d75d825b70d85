"""A proxy and a search strategy of a user's own, defined outside the package, run a search from YAML."""
import json
import textwrap
from pathlib import Path

import yaml

from lightning_epe.cli import main
from lightning_epe.scores import list_scores, unregister_score

ROOT = Path(__file__).resolve().parents[2]

USER_MODULE = '''
import torch
from lightning_epe.scores import register_score


@register_score("toy_width", needs_labels=False, data_dependent=False)
def toy_width(model, inputs, targets=None):
    """The number of output channels of the first convolution (a toy proxy)."""
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    return float(first.out_channels)


class EveryKth:
    """A toy strategy: candidates 0, k, 2k, ... of the space."""

    def __init__(self, k: int = 3):
        self.k = k
        self.hparams = {"k": k}

    def setup(self, space, budget: int | None, seed: int) -> None:
        self.queue = list(range(0, len(space), self.k))[:budget]

    def ask(self):
        return self.queue.pop(0) if self.queue else None

    def tell(self, candidate, score) -> None:
        pass
'''


def test_a_users_proxy_and_strategy_run_a_search_from_yaml(tmp_path, monkeypatch):
    (tmp_path / "my_nas_ext.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = yaml.safe_load((ROOT / "recipes/quickstart.yaml").read_text())
    recipe["search"].update({
        "score": "my_nas_ext.toy_width",
        "search_strategy": {"class_path": "my_nas_ext.EveryKth", "init_args": {"k": 1000}},
        "budget": 4, "progress": False, "batch_size": 16, "build_options": {"C": 2, "N": 1},
    })
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    try:
        assert main(["score", "--config", str(tmp_path / "recipe.yaml"), "--results_dir", str(tmp_path / "out")]) == 0
        assert "toy_width" in list_scores()
        records = [json.loads(line) for line in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
        assert [r["candidate"] for r in records] == [0, 1000, 2000, 3000]
        assert all(r["score"] == 2.0 for r in records)  # the stem convolution of C=2 cells
        config = json.loads((tmp_path / "out" / "config.json").read_text())
        assert config["strategy"] == "my_nas_ext.EveryKth" and config["strategy_options"] == {"k": 1000}
        assert config["score"] == "my_nas_ext.toy_width"
    finally:
        if "toy_width" in list_scores():
            unregister_score("toy_width")
