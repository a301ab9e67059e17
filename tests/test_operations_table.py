"""``docs/operations.md`` is what ``scripts/operations_table.py`` generates (checked on a few columns)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
import transformers

from steerplug.sites.router import ROUTER_LAYOUT_ADVICE
from tests.helpers.models import tiny

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ["llama", "gpt2", "qwen2_moe", "deepseek_v3"]  # dense, Conv1D, MoE, dense-then-MoE
SITE_LISTING = re.compile(r" \(sites on this model: [^()]*\)$")


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("operations_table", ROOT / "scripts" / "operations_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _committed(script: ModuleType) -> tuple[dict[tuple[str, str], str | None], list[str]]:
    """``(example, arch) -> None (✓) or reason`` and the architectures, read back from the markdown."""
    text = script.OUTPUT.read_text(encoding="utf-8")
    reasons = dict(re.findall(r'^(\d+)\. <a id="note-\d+"></a>(.*)$', text, flags=re.M))
    header = next(line for line in text.splitlines() if line.startswith("| example | operation |"))
    archs = [cell.strip() for cell in header.strip("|").split("|")[2:]]
    cells: dict[tuple[str, str], str | None] = {}
    for line in text.splitlines():
        match = re.match(r"^\| \[([^\]]+)\]\(", line)
        if match:
            values = [cell.strip() for cell in line.strip("|").split("|")[2:]]
            for arch, value in zip(archs, values, strict=True):
                note = re.match(r"✗ \[(\d+)\]", value)
                cells[(match[1], arch)] = reasons[note[1]].replace("\\|", "|") if note else None
    return cells, archs


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return _script()


def test_every_example_and_architecture_is_in_the_committed_table(script: ModuleType) -> None:
    cells, archs = _committed(script)
    assert archs == list(script.ARCHITECTURES)
    assert sorted({example for example, _ in cells}) == [f.name for f in script.example_folders()], (
        "examples changed: run python scripts/operations_table.py")


def _generated_with(script: ModuleType) -> str:
    match = re.search(r"^Generated with transformers (\S+) ", script.OUTPUT.read_text(encoding="utf-8"), flags=re.M)
    assert match, "docs/operations.md does not say which transformers generated it: run scripts/operations_table.py"
    return match[1]


def _comparable(reason: str | None, exact: bool) -> str | None:
    """``reason`` as compared; on another transformers release than the table's, without the hint that lists
    the model's sites (it differs where that release refuses a site, e.g. a router)."""
    return reason if exact or reason is None else SITE_LISTING.sub("", reason)


@pytest.mark.parametrize("arch", CHECKED)
def test_committed_cells_are_reproduced(script: ModuleType, arch: str) -> None:
    """Identical on the release that generated the table; on others, a cell may differ only where that release
    lays out a router in a way steerplug refuses (checked against the routers in tests/test_sites.py)."""
    cells, _ = _committed(script)
    exact = transformers.__version__ == _generated_with(script)
    model = tiny(arch)
    for folder in script.example_folders():
        reason = script.try_example(folder, model)
        expected = None if reason is None else " ".join(reason.split())
        assert (folder.name, arch) in cells, f"{folder.name} is not in the table: run scripts/operations_table.py"
        committed = cells[(folder.name, arch)]
        if not exact and expected is not None and ROUTER_LAYOUT_ADVICE in expected and committed is None:
            continue
        assert _comparable(committed, exact) == _comparable(expected, exact), (
            f"{folder.name} on {arch}: run scripts/operations_table.py")
