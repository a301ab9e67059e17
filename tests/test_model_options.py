"""``steerplug.load_model`` and the shared CLI model options: real ``from_pretrained`` on local folders and on
a pre-populated offline hub cache, dtype and device handling, device maps, remote-code warnings."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

import steerplug
from steerplug.cli.main import main
from steerplug.errors import SteerplugError
from steerplug.models import RemoteCodeWarning, load_model
from tests.helpers.hub import folder_files, isolate, write_hub_snapshot
from tests.helpers.models import tiny_llama
from tests.test_extract import word_tokenizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    tiny_llama(3).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


def test_local_folder_in_each_dtype(checkpoint: Path) -> None:
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        model, tok = load_model(str(checkpoint), dtype=name, device="cpu")
        assert next(model.parameters()).dtype == dtype and not model.training
        assert tok("the cat")["input_ids"]
    model, _ = load_model(str(checkpoint), dtype="auto")
    assert next(model.parameters()).dtype == torch.float32  # the stored dtype
    reference = tiny_llama(3).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


def test_hub_id_and_revision_from_the_offline_cache(checkpoint: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    paths = isolate(monkeypatch, tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(paths.hf_cache))
    files = folder_files(checkpoint)
    old = write_hub_snapshot(paths.hf_cache, "org/tiny", files, ref="v1")
    changed = dict(files, **{"config.json": files["config.json"].replace(b'"num_hidden_layers": 3',
                                                                         b'"num_hidden_layers": 2')})
    write_hub_snapshot(paths.hf_cache, "org/tiny", changed, ref="main")
    main_model, _ = load_model("org/tiny", device="cpu")
    pinned, _ = load_model("org/tiny", revision=old, device="cpu")
    assert main_model.config.num_hidden_layers == 2 and pinned.config.num_hidden_layers == 3
    with pytest.raises(SteerplugError, match=r"cannot load model 'org/missing': ") as error:
        load_model("org/missing")
    assert "not in the local cache and HF_HUB_OFFLINE is set (unset HF_HUB_OFFLINE" in str(error.value)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"revision": "main"}, "--revision pins hub ids, not the local folder"),
    ({"dtype": "bf16"}, "unknown dtype 'bf16' (did you mean 'bfloat16'?)"),
    ({"device": "tpu:9"}, "unknown device 'tpu:9'"),
    ({"device": "cpu", "device_map": "auto"}, "either a device or a device map"),
])
def test_bad_options_are_one_line_errors(checkpoint: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(SteerplugError) as error:
        load_model(str(checkpoint), **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_refused(checkpoint: Path) -> None:
    with pytest.raises(SteerplugError, match="CUDA is not available on this machine"):
        load_model(str(checkpoint), device="cuda")


def test_a_device_map_needs_accelerate(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else real(name, *a))
    with pytest.raises(SteerplugError, match="a device map needs the accelerate package: pip install accelerate"):
        load_model(str(checkpoint), device_map="auto")


@pytest.mark.skipif(importlib.util.find_spec("accelerate") is None, reason="accelerate is not installed")
def test_a_device_map_places_the_model_and_steering_works(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    seen: list[dict] = []
    real = AutoModelForCausalLM.from_pretrained.__func__  # type: ignore[attr-defined]

    def spy(cls: type, *args: object, **kwargs: object) -> object:
        seen.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    model, _ = load_model(str(checkpoint), device_map="auto")
    assert seen[-1]["device_map"] == "auto" and next(model.parameters()).device.type == "cpu"
    reference, _ = load_model(str(checkpoint), device="cpu")
    ids = torch.tensor([[1, 5, 6, 7]])
    doc = {"apiVersion": "steerplug/v1", "kind": "Recipe", "metadata": {"name": "v"},
           "interventions": [{"id": "v", "op": "add", "site": "resid_post", "layers": [1], "vector": [0.5] * 32}]}
    with steerplug.steer(model, doc), steerplug.steer(reference, doc), torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, reference(input_ids=ids).logits)


def test_trust_remote_code_warns(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.warns(RemoteCodeWarning, match="runs Python code shipped with"):
        load_model(str(checkpoint), trust_remote_code=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CLI prints it as one line instead of a Python warning
        assert main(["run", "--model", str(checkpoint), "--trust-remote-code", "--recipe", "recipes/spanish",
                     "--prompt", "the", "--max-new-tokens", "2"]) == 1  # the demo recipe does not fit: refused
    err = capsys.readouterr().err
    assert err.startswith("warning: --trust-remote-code runs Python code shipped with")


def test_cli_options_become_model_options(checkpoint: Path) -> None:
    from steerplug.cli.main import parse_args
    from steerplug.cli.models import model_options

    args = parse_args(["record", "--model", str(checkpoint), "--dtype", "bfloat16", "--device", "cpu", "--sites",
                       "resid_post=1", "--token-ids", "1", "--out", "x"])
    options = model_options(args)
    assert options == steerplug.ModelOptions(str(checkpoint), dtype="bfloat16", device="cpu")
    model, _ = options.load()
    assert next(model.parameters()).dtype == torch.bfloat16
    args = parse_args(["run", "--model", "org/m", "--revision", "abc", "--device-map", "auto", "--trust-remote-code",
                       "--recipe", "r", "--prompt", "p"])
    assert model_options(args) == steerplug.ModelOptions("org/m", revision="abc", device_map="auto",
                                                         trust_remote_code=True)
