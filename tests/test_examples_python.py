"""The Python examples the README quotes run and print what it shows."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_chat_turns_example(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(ROOT / "examples/python/chat_turns.py"), run_name="__main__")
    out = capsys.readouterr().out
    readme = (ROOT / "README.md").read_text()
    for line in out.strip().splitlines():
        assert f"# {line}" in readme
