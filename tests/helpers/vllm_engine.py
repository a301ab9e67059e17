"""Run one vLLM engine through a plan of request phases and write what came back (a child process of the tests).

``python -m tests.helpers.vllm_engine PLAN.json OUT.json``. vLLM starts processes of its own, so the engine
lives in this script's ``__main__`` (spawn-safe) and the tests only read ``OUT.json``. A plan::

    {"model": DIR, "engine": {LLM keyword arguments}, "env": {VAR: VALUE},
     "phases": [{"name": ..., "requests": [{"prompt": [ids], "extra": {extra_args} | null,
                                             "max_tokens": 12}], "expect_error": false}]}

Each phase is ONE ``LLM.generate`` call (one mixed batch). For each request the output holds the greedy
tokens, the log-probability of each, and the prefix-cache hit count; an ``expect_error`` phase holds the
exception's type and message instead. ``preemptions`` counts the scheduler's preemptions over the run
(with ``disable_log_stats: false``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _phase(llm: Any, phase: dict[str, Any]) -> Any:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    prompts = [TokensPrompt(prompt_token_ids=r["prompt"]) for r in phase["requests"]]
    params = [SamplingParams(temperature=0.0, max_tokens=r["max_tokens"], ignore_eos=True, logprobs=0,
                             extra_args=r.get("extra")) for r in phase["requests"]]
    try:
        outputs = llm.generate(prompts, params, use_tqdm=False)
    except Exception as exc:  # an expected refusal is data for the test
        if not phase.get("expect_error"):
            raise
        return {"error": f"{type(exc).__name__}: {exc}"}
    results = []
    for out in outputs:
        sample = out.outputs[0]
        logprobs = [step[token].logprob for step, token in zip(sample.logprobs or [], sample.token_ids, strict=True)]
        results.append({"tokens": list(sample.token_ids), "logprobs": logprobs,
                        "cached": out.num_cached_tokens or 0})
    return results


def _preemptions(llm: Any) -> int:
    total = 0
    for metric in llm.get_metrics():
        if metric.name == "vllm:num_preemptions":
            total += int(getattr(metric, "value", 0))
    return total


def main(plan_path: str, out_path: str) -> None:
    with open(plan_path, encoding="utf-8") as f:
        plan = json.load(f)
    os.environ.update(plan.get("env", {}))
    from vllm import LLM

    llm = LLM(model=plan["model"], **plan["engine"])
    result: dict[str, Any] = {"phases": {}}
    for phase in plan["phases"]:
        result["phases"][phase["name"]] = _phase(llm, phase)
    if plan["engine"].get("disable_log_stats") is False:  # vLLM keeps no metrics otherwise
        result["preemptions"] = _preemptions(llm)
    config = llm.llm_engine.vllm_config
    result["steerplug_resolved"] = (config.additional_config or {}).get("steerplug_resolved")
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)


def run_plan(plan: dict[str, Any], folder: Path, timeout: float = 1800) -> dict[str, Any]:
    """Run ``plan`` in a child process; its output, or an AssertionError with the end of the engine's log."""
    (folder / "plan.json").write_text(json.dumps(plan))
    log = folder / "engine.log"
    with log.open("w") as sink:
        code = subprocess.run([sys.executable, "-m", "tests.helpers.vllm_engine", str(folder / "plan.json"),
                               str(folder / "out.json")], cwd=REPO, stdout=sink, stderr=subprocess.STDOUT,
                              timeout=timeout).returncode
    if code:
        raise AssertionError(f"the vLLM engine failed (exit {code}):\n" + log.read_text()[-6000:])
    result: dict[str, Any] = json.loads((folder / "out.json").read_text())
    return result


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
