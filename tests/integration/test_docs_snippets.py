"""Every code block of README.md and docs/*.md runs (docs/benchmarks/ is generated, not documentation).

- ```python blocks are executed, each alone in a fresh namespace, as a reader would paste them into a
  Python session started in the repository root: the working directory is a scratch "checkout" (its
  ``recipes/`` and ``../shared/data`` are links to the real ones) shared by every block in page order,
  so whatever the blocks write (``results/``, ``lightning_logs/``) stays out of the repository, and two
  blocks that would collide for a reader (one results directory, two configurations) fail.
- ```bash blocks: every ``lightning-epe`` command in them runs (in this process; a multi-process
  ``--strategy ddp`` one as its own process), with small overrides appended (a few tiny candidates,
  one short epoch) so that CI stays fast; the installation steps around them are CI's own.
- ```yaml blocks are loaded; a fragment of a recipe (``data``, ``search`` ...) is merged into the
  quickstart recipe and parsed by the command line's parser, unless it names a class of the reader's
  own package (``my_package...``), which cannot be imported here.
- ```text blocks (program output, on-disk layouts, synopses) are not run. Every block must say which
  of the four it is: a bare ``` fence fails.

A block that needs what CI does not have is marked by an HTML comment right before it, with the
reason: ``<!-- snippet: needs-network (downloads CIFAR-10) -->`` or ``<!-- snippet: needs-gpu -->``.
Such a block is compiled (python) or parsed with ``--print_config`` (``lightning-epe``), then skipped
with its reason; each should have an offline variant beside it. A block that reads ``../shared/data``
is skipped with a reason when that folder is absent.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lightning_epe.recipes import recipe_path
from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*snippet:\s*(needs-network|needs-gpu)\b\s*\(?(.*?)\)?\s*-->\s*$", re.S)
LANGUAGES = ("python", "bash", "yaml", "text")
# appended to every search/score/fit command: 3 tiny candidates, one short epoch
FAST = ["--search.budget", "3", "--search.batch_size", "16", "--search.progress", "false",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.limit_test_batches", "2", "--trainer.enable_progress_bar", "false"]
NB201_FAST = ["--search.build_options", '{"C": 2, "N": 1}']


@dataclass
class Snippet:
    page: Path
    line: int
    language: str
    code: str
    marker: tuple[str, str] | None  # (needs-network | needs-gpu, reason)

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def snippets() -> list[Snippet]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            before = text[:match.start()].rstrip()
            marker = MARKER.search(before[before.rfind("<!--"):]) if before.endswith("-->") else None
            found.append(Snippet(page, text.count("\n", 0, match.start()) + 1, match.group(1).strip(),
                                 match.group(2), (marker.group(1), marker.group(2)) if marker else None))
    return found


ALL = snippets()


def test_every_block_says_what_it_is():
    unlabelled = [s.id for s in ALL if s.language not in LANGUAGES]
    assert not unlabelled, f"code blocks without a language ({', '.join(LANGUAGES)}): {unlabelled}"


def test_the_docs_have_blocks_of_every_kind():
    assert {s.language for s in ALL} == set(LANGUAGES) and len([s for s in ALL if s.language == "python"]) > 20


@pytest.fixture(scope="session")
def reader_checkout(tmp_path_factory):
    """The reader's checkout: a directory that looks like the repository root (``recipes/`` and
    ``../shared/data`` resolve to the real ones). Every block runs there, in the order of the pages, as
    one reader following them would run them: two blocks that would collide (one results directory
    for two configurations) fail here as they would for the reader."""
    base = tmp_path_factory.mktemp("reader")
    root = base / "repo"
    root.mkdir()
    (root / "recipes").symlink_to(ROOT / "recipes")
    if SHARED.parent.exists():
        (base / "shared").symlink_to(SHARED.parent)
    return root


@pytest.fixture
def repo_view(reader_checkout, monkeypatch):
    monkeypatch.chdir(reader_checkout)
    return reader_checkout


@contextlib.contextmanager
def registries_restored():
    """Snippets may register scores and strategies (docs/contributing.md): undo it afterwards."""
    from lightning_epe.scores import registry
    from lightning_epe.search import strategies

    tables = [registry._SCORES, registry._INFO, strategies._STRATEGIES]
    saved = [dict(table) for table in tables]
    try:
        yield
    finally:
        for table, content in zip(tables, saved):
            table.clear()
            table.update(content)


def needs_shared_data(snippet: Snippet) -> None:
    if "../shared/data" in snippet.code and not SHARED.exists():
        pytest.skip(f"{snippet.id} reads ../shared/data, absent on this machine ({SHARED})")


@pytest.mark.parametrize("snippet", [s for s in ALL if s.language == "python"], ids=lambda s: s.id)
def test_python_block_runs(snippet, repo_view):
    code = compile(snippet.code, snippet.id, "exec")
    if snippet.marker:
        pytest.skip(f"{snippet.id} is marked {snippet.marker[0]} ({snippet.marker[1]}): compiled, not run")
    needs_shared_data(snippet)
    with registries_restored(), contextlib.redirect_stdout(io.StringIO()):
        exec(code, {"__name__": "__snippet__"})


def lightning_epe_commands(code: str) -> list[list[str]]:
    """The ``lightning-epe`` commands of a bash block (after any ``&&``), as argument lists."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words and words[0] == "lightning-epe":
                commands.append(words[1:])
    return commands


def with_small_overrides(args: list[str]) -> list[str]:
    """``args`` with :data:`FAST` (and tiny NB201 cells) before any ``--print_config`` (which goes last)."""
    if not args or args[0] not in ("search", "score", "fit"):
        return args
    recipe = args[args.index("--config") + 1] if "--config" in args else None
    space = yaml.safe_load(Path(recipe_path(recipe)).read_text())["search"].get("space", {}) if recipe else {}
    extra = FAST + (NB201_FAST if "NB201Space" in str(space) else [])
    if args[0] == "fit" and "--candidate" not in args and "--results_dir" not in args:
        extra = extra + ["--candidate", "0"]
    at = args.index("--print_config") if "--print_config" in args else len(args)
    return args[:at] + extra + args[at:]


def run_command(args: list[str]) -> None:
    from lightning_epe.cli import main

    if "ddp" in args:  # Lightning launches the other processes by running the command again: a real process
        env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT")}
        done = subprocess.run([sys.executable, "-m", "lightning_epe.cli", *args], capture_output=True, text=True,
                              timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        return
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(args)
        except SystemExit as exit_:  # --print_config
            code = exit_.code
    assert code == 0, f"lightning-epe {shlex.join(args)} exited with {code}"


BASH = [s for s in ALL if s.language == "bash" and lightning_epe_commands(s.code)]


@pytest.mark.parametrize("snippet", BASH, ids=lambda s: s.id)
def test_lightning_epe_commands_run(snippet, repo_view, capsys):
    commands = lightning_epe_commands(snippet.code)
    if snippet.marker:  # what can run offline on a CPU: the command line parses
        for args in commands:
            if args and args[0] in ("search", "score", "fit"):
                run_command([a for a in args if a != "--print_config"] + ["--print_config"])
        pytest.skip(f"{snippet.id} is marked {snippet.marker[0]} ({snippet.marker[1]}): parsed with "
                    "--print_config, not run")
    needs_shared_data(snippet)
    for args in commands:
        run_command(with_small_overrides(args))
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err, captured.err[-3000:]


RECIPE_SECTIONS = {"data", "search", "model", "trainer", "seed_everything", "results_dir", "logger"}


@pytest.mark.parametrize("snippet", [s for s in ALL if s.language == "yaml"], ids=lambda s: s.id)
def test_yaml_block_loads_and_parses_as_part_of_a_recipe(snippet, repo_view, capsys):
    fragment = yaml.safe_load(snippet.code)
    assert isinstance(fragment, dict) and set(fragment) <= RECIPE_SECTIONS, snippet.id
    if re.search(r"\bmy_?package\b", snippet.code):
        return  # a class of the reader's own package: loaded, not resolvable here
    recipe = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    for key, value in fragment.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict) and "class_path" not in value:
            recipe[key].update(value)
        else:
            recipe[key] = value
    (repo_view / "fragment.yaml").write_text(yaml.safe_dump(recipe))
    run_command(["search", "--config", "fragment.yaml", "--print_config"])
    capsys.readouterr()


def test_list_scores_comments_name_the_registered_scores():
    """A comment that lists ``list_scores()`` in full shows what it returns."""
    from lightning_epe.scores import list_scores

    listed = 0
    for snippet in ALL:
        for match in re.finditer(r"list_scores\(\)\s*#\s*(\[[^\]]*\])", re.sub(r"\n\s*#\s*", " ", snippet.code)):
            names = re.findall(r"'([^']+)'", match.group(1))
            if "..." not in match.group(1):
                assert names == list_scores(), snippet.id
                listed += 1
    assert listed >= 1
