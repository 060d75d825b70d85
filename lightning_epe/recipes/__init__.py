"""The built-in recipes: YAML files shipped with the package (the repository's ``recipes/`` links here).

``lightning-epe search --config quickstart`` names one; ``lightning-epe recipes`` lists them. The first
line of a recipe is a comment with its one-line summary. Imports nothing heavy: the command line lists
them without loading torch.
"""
from __future__ import annotations

import os
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
SUFFIX = ".yaml"


def list_recipes() -> dict[str, str]:
    """``{name: one-line summary}`` of the built-in recipes, by name."""
    return {path.stem: _summary(path) for path in sorted(FOLDER.glob(f"*{SUFFIX}"))}


def _summary(path: Path) -> str:
    with path.open() as f:
        first = f.readline().strip()
    return first.lstrip("#").strip() if first.startswith("#") else ""


def recipe_path(name_or_path: str | os.PathLike) -> str:
    """The file of a recipe: ``name_or_path`` itself when that file exists, else the built-in recipe of that name
    (``quickstart`` or ``quickstart.yaml``). A ``ValueError`` says what was looked for and lists the names."""
    text = os.fspath(name_or_path)
    if os.path.exists(os.path.expanduser(text)):
        return text
    name = text.removesuffix(SUFFIX)
    if name and os.sep not in name and "/" not in name and (FOLDER / f"{name}{SUFFIX}").is_file():
        return str(FOLDER / f"{name}{SUFFIX}")
    raise ValueError(f"--config {text!r}: no such file, nor a built-in recipe; built-in recipes: "
                     f"{', '.join(list_recipes())} (`lightning-epe recipes` lists them with what each runs)")
