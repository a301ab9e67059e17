"""Monitors and ``steerplug stats`` / ``steerplug probe train``: figures equal a hand computation on tiny
models; the CLI writes CSV, JSON, PNG and a loadable probe bundle."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import steerplug
from steerplug.cli.main import main
from tests.helpers.models import Recorder, hook_count, recipe, tiny

BATCHES = [torch.tensor([[0, 5, 9, 14, 3, 7], [0, 0, 0, 21, 8, 30]]), torch.tensor([[4, 12, 19, 25, 6, 11]])]


def hand_stats(values: torch.Tensor, threshold: float) -> dict[str, float]:
    x = values.double().reshape(-1)
    mean = x.mean()
    centered = x - mean
    var = centered.square().mean()
    return {"count": x.numel(), "max_abs": float(x.abs().max()), "mean": float(mean), "std": float(var.sqrt()),
            "rms": float(x.square().mean().sqrt()), "kurtosis": float(centered.pow(4).mean() / var**2 - 3),
            "sparsity": float((x.abs() <= threshold).double().mean())}


@pytest.mark.parametrize(("arch", "site", "layer"), [("llama", "resid_post", 1), ("llama", "mlp_act", 0),
                                                     ("gpt2", "attn_out", 1), ("opt", "mlp_act", 0),
                                                     ("llama", "final_norm", None)])
def test_monitor_figures_equal_hand_computation(arch: str, site: str, layer: int | None) -> None:
    model = tiny(arch)
    binding = steerplug.site_adapter(model).resolve(site, layer)
    threshold = 0.01
    monitor = {"sites": [site], "threshold": threshold, "top_k": 4,
               **({"layers": [layer]} if layer is not None else {})}
    seen, where = [], []
    with steerplug.steer(model, recipe(monitors=[monitor])) as handle, torch.no_grad():
        for number, ids in enumerate(BATCHES):
            mask = (ids != 0).long()
            recorder = Recorder(binding)
            model(input_ids=ids, attention_mask=mask)
            x = recorder.remove()
            x = x.reshape((*ids.shape, x.shape[-1]))
            seen.append(x[mask.bool()])
            for row, column, channel in torch.nonzero(mask.bool()[..., None].expand_as(x)).tolist():
                where.append((float(x[row, column, channel]), number, row, column, channel))
        (row,) = handle.monitor_stats()
    expected = hand_stats(torch.cat(seen), threshold)
    assert row["count"] == expected["count"]
    for name in ("max_abs", "mean", "std", "rms", "kurtosis", "sparsity"):
        assert math.isclose(row[name], expected[name], rel_tol=1e-9, abs_tol=1e-12), name
    top = sorted(where, key=lambda entry: -abs(entry[0]))[:4]
    assert [(t.value, t.sequence, t.row, t.column, t.channel) for t in row["top"]] == top


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from steerplug.demo.tokenizer import build_tokenizer

    folder = tmp_path_factory.mktemp("tiny-demo")
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_stats_cli_writes_tables_and_plots(tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    from steerplug.demo.grammar import examples

    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in examples(n=12, seed=1)))
    out = tmp_path / "stats"
    assert main(["stats", str(tiny_folder), "--data", str(data), "--out", str(out), "--batch-size", "5",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "resid_post" in printed and "wrote" in printed
    rows = list(csv.DictReader((out / "stats.csv").open()))
    assert {(r["site"], r["layer"]) for r in rows} >= {("embed", ""), ("resid_post", "2"), ("mlp_act", "0"),
                                                      ("final_norm", "")}
    massive = json.loads((out / "stats.json").read_text())["massive"]
    assert all(m["text"] and m["channel"] < 64 for m in massive)
    assert {p.name for p in out.glob("*.png")} == {f"{s}.png" for s in ("max_abs", "mean", "std", "rms", "kurtosis",
                                                                        "sparsity")}


def test_stats_cli_reports_user_mistakes_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "demo", "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == f"steerplug stats: data file '{tmp_path / 'missing.jsonl'}' not found"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"txt": "b"}\n')
    assert main(["probe", "train", "demo", "--data", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.strip() == (f"steerplug probe: {bad}:1: 'label' must be 0/1 or true/false, "
                                               "got None")


def test_probe_train_writes_a_bundle_whose_probe_reproduces_the_reported_accuracy(
        tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from steerplug.cli.models import load_causal_lm
    from steerplug.demo.grammar import examples
    from steerplug.probes.train import split

    texts = examples(sentiment="negative", n=16, seed=2) + examples(sentiment="positive", n=16, seed=3)
    labels = [1] * 16 + [0] * 16
    data = tmp_path / "labelled.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels, strict=True)))
    out = tmp_path / "bundle"
    assert main(["probe", "train", "--model", str(tiny_folder), "--data", str(data), "--out", str(out),
                 "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| layer | held-out accuracy | held-out AUROC |" in printed and "best: layer" in printed
    report = tmp_path / "bundle.report"  # beside the bundle, never inside it: push accepts the bundle
    assert (report / "probe_layers.png").is_file() and (report / "probe_layers.csv").is_file()
    from steerplug.bundle import check_bundle

    assert check_bundle(out) == ["README.md", "probe.safetensors", "recipe.yaml"]
    loaded = steerplug.load_recipe(out)
    (probe,) = loaded.spec.probes
    reported = loaded.spec.metadata.annotations["probe_train"]
    assert reported["layer"] == probe.layer and probe.kind == "logistic" and probe.aggregate == "mean"

    model, tokenizer = load_causal_lm(str(tiny_folder))
    _, test = split(labels, 0.25, 1)
    before = hook_count(model)
    correct = 0
    with steerplug.steer(model, out) as handle, torch.no_grad():
        for index in test:  # one text at a time: the runtime probe on the written bundle
            model(**tokenizer([texts[index]], return_tensors="pt"))
            correct += int((float(handle.probe_scores(probe.id)[0]) > 0.5) == bool(labels[index]))
    assert hook_count(model) == before
    assert correct / len(test) == pytest.approx(reported["accuracy"])
