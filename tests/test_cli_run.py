"""``steerplug run`` on a real local model folder (from_pretrained), and its one-line user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from steerplug.cli.main import main

WORDS = ["<pad>", "<bos>", "<eos>", "<unk>", "the", "cat", "dog", "sat", "ran", "on", "mat", "a", "happy", "sad"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-model")
    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>",
                                        eos_token="<eos>", unk_token="<unk>")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def _recipe(tmp_path: Path, strength: float) -> Path:
    vector = torch.randn(32, generator=torch.Generator().manual_seed(1)) * 8
    doc = {"apiVersion": "steerplug/v1", "kind": "Recipe", "metadata": {"name": "push"},
           "model": {"model_type": "llama", "hidden_size": 32},
           "interventions": [{"id": "v", "op": "add", "site": "resid_post", "layers": "all",
                              "vector": vector.tolist(), "strength": strength}]}
    path = tmp_path / f"recipe-{strength}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_run_compare_prints_baseline_and_steered(model_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "--model", str(model_dir), "--prompt", "the cat", "--prompt", "a dog sat",
            "--max-new-tokens", "6", "--compare", "--json"]
    assert main([*args, "--recipe", str(_recipe(tmp_path, 0.0))]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["prompt"] for r in rows] == ["the cat", "a dog sat"]
    assert all(r["baseline"] == r["steered"] for r in rows)  # strength 0 is exactly unsteered
    assert main([*args, "--recipe", str(_recipe(tmp_path, 1.0))]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["baseline"] != r["steered"] for r in rows)
    assert all(len(r["steered"].split()) >= 1 for r in rows)


def test_run_reports_user_mistakes_in_one_line(model_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--model", str(tmp_path / "nope"), "--recipe", str(_recipe(tmp_path, 1.0)),
                 "--prompt", "x"]) == 2
    assert capsys.readouterr().err == f"steerplug run: model folder '{tmp_path / 'nope'}' not found\n"
    assert main(["run", "--model", str(model_dir), "--recipe", str(tmp_path / "missing.yaml"),
                 "--prompt", "x"]) == 1
    assert capsys.readouterr().err == f"{tmp_path / 'missing.yaml'}: /: file not found\n"
    wide = yaml.safe_load(_recipe(tmp_path, 1.0).read_text())
    wide["model"]["hidden_size"] = 64
    wide["interventions"][0]["vector"] *= 2  # consistent with the declared (wrong) model, so it loads
    (tmp_path / "wide.yaml").write_text(yaml.safe_dump(wide))
    assert main(["run", "--model", str(model_dir), "--recipe", str(tmp_path / "wide.yaml"), "--prompt", "x"]) == 1
    assert capsys.readouterr().err == (f"{tmp_path / 'wide.yaml'}: /model/hidden_size: recipe needs hidden size 64, "
                                       "this model has 32 (this recipe was made for a different model)\n")
