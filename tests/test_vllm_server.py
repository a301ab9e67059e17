"""The OpenAI-compatible server: ``vllm serve`` with recipes from the documented setting, on loopback.

A second architecture (Qwen3) and the ``--additional-config '{"steerplug": {"recipes": [DIR]}}'`` setting
instead of the environment variable. Steered and unsteered completions are compared with Transformers token
for token (same strategy as ``test_vllm_engine.py``); an unknown recipe is an HTTP 400 for that request
while the server keeps serving; then the server is stopped (and killed if it does not stop).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers.vllm_models import build_model, hf_generate, scaled_recipe, write_recipes

pytestmark = [pytest.mark.vllm,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")]

PORTS = range(18000, 18100)
MAX_TOKENS = 8


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18000-18099")


def _wait_ready(process: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 1200) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"vllm serve exited with {process.returncode}:\n{log.read_text()[-6000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    pytest.fail(f"vllm serve did not get ready in {timeout:.0f} s:\n{log.read_text()[-6000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("vllm-server")
    model_dir = build_model(root / "model", "qwen3", seed=1)
    bundles = write_recipes(root / "recipes")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "STEERPLUG_VLLM_RECIPES"}
    env["VLLM_CPU_KVCACHE_SPACE"] = "1"
    setting = json.dumps({"steerplug": {"recipes": [str(root / "recipes")]}})
    # `vllm serve` itself: vllm-cpu 0.32's `vllm` launcher looks up its version under the distribution name
    # "vllm" and exits (its distribution is "vllm-cpu"); the server module takes the same arguments.
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--host", "127.0.0.1",
               "--port", str(port), "--served-model-name", "tiny", "--dtype", "float32", "--max-model-len", "256",
               "--enforce-eager", "--seed", "0", "--additional-config", setting]
    log = root / "server.log"
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_ready(process, port, log)
        from openai import OpenAI
        from transformers import AutoModelForCausalLM

        yield {"client": OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0),
               "model": AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval(),
               "bundles": bundles, "process": process}
    finally:
        _stop(process)
    assert process.returncode is not None


def _complete(server: dict[str, Any], prompt: list[int], xargs: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"return_token_ids": True, "ignore_eos": True}
    if xargs is not None:
        body["vllm_xargs"] = xargs
    response = server["client"].completions.create(model="tiny", prompt=prompt, max_tokens=MAX_TOKENS,
                                                   temperature=0.0, logprobs=0, extra_body=body)
    choice = response.choices[0]
    return {"tokens": list(choice.token_ids), "logprobs": list(choice.logprobs.token_logprobs)}


CASES = [([1, 40, 41, 42], None, None, 1.0), ([1, 40, 41, 42], {"steerplug": "compose"}, "compose", 1.0),
         ([1, 7, 9, 11, 200, 13, 5], {"steerplug": "add-last", "steerplug_strength": 0.5}, "add-last", 0.5),
         ([1, 7, 9, 11, 200, 13, 5], None, None, 1.0)]


@pytest.mark.parametrize(("prompt", "xargs", "recipe", "strength"), CASES)
def test_completion_equals_transformers(server: dict[str, Any], prompt: list[int], xargs: dict[str, Any] | None,
                                        recipe: str | None, strength: float) -> None:
    got = _complete(server, prompt, xargs)
    reference = None if recipe is None else scaled_recipe(server["bundles"][recipe], strength)
    want = hf_generate(server["model"], prompt, reference, MAX_TOKENS)
    assert want["margin"] > 1e-3, "near-tie in the reference: comparison not meaningful"
    assert got["tokens"] == want["tokens"]
    assert max(abs(a - b) for a, b in zip(got["logprobs"], want["logprobs"], strict=True)) < 2e-3


def test_steering_changes_the_completion(server: dict[str, Any]) -> None:
    prompt = CASES[0][0]
    assert _complete(server, prompt, {"steerplug": "compose"})["tokens"] != _complete(server, prompt, None)["tokens"]


def test_unknown_recipe_is_a_400_and_the_server_keeps_serving(server: dict[str, Any]) -> None:
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as caught:
        _complete(server, [1, 5, 6], {"steerplug": "composee"})
    assert caught.value.status_code == 400
    assert "steerplug: unknown recipe 'composee' (did you mean 'compose'?)" in str(caught.value)
    with pytest.raises(BadRequestError, match="strength must be finite"):
        _complete(server, [1, 5, 6], {"steerplug": "compose", "steerplug_strength": 1e30})
    assert len(_complete(server, [1, 5, 6], {"steerplug": "compose"})["tokens"]) == MAX_TOKENS
