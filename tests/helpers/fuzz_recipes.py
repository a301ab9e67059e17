"""Recipe fuzzing: hypothesis strategies over the schema, byte-level mutations, bundle attacks, and the oracle.

A :class:`Case` is a recipe document (bytes, YAML or JSON) with optional bundle attacks. :func:`run_case`
loads it, and when it is accepted attaches it to a tiny float32 Llama, runs a forward and a short
``generate``, and detaches. It returns None when the outcome is one of the two allowed ones:

* a clean refusal: a :class:`steerplug.SteerplugError` whose every line is one clean located line (printable,
  bounded, ``file: /pointer: message`` for recipe problems), with no hook left and the model unchanged;
* a clean accept: attach, forward and generate run with finite outputs, and detaching restores the model's
  outputs bit for bit;

and otherwise a one-line description of what went wrong (a traceback, a hang, an unclean line, a crash or a
non-finite output after an accept). ``tests/test_fuzz_recipes.py`` runs a few hundred cases with a fixed
seed; ``scripts/fuzz_recipes.py`` runs as many as asked and reports the counts.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from hypothesis import strategies as st
from safetensors.torch import save_file

import steerplug
from steerplug.cli.main import main as cli_main
from steerplug.errors import RecipeError, SteerplugError
from steerplug.recipe.artifacts import sha256_file
from steerplug.runtime.host import Host

WIDTH, LAYERS = 32, 3
CASE_SECONDS = 20.0
"""A case that takes longer is a hang."""
MAX_LINE = 2_000
LOCATED = re.compile(r"^.+?: /\S*: \S.*$")
SHA = "0" * 64
"""Placeholder digest, replaced by the bundle file's real sha256 when a case is written."""

# ---------------------------------------------------------------------------------------------- values

HUGE_INTS = [2**31, 2**31 - 1, -(2**31), 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**40)]
EDGE_FLOATS = [0.0, -0.0, 1e-45, 1e-300, 0.5, 3.0, -7.5, 6.5e4, 7e4, 1e10, 3e38, 3.5e38, 1e39, 1e300, -1e308]
WEIRD_STRINGS = ["", " ", "a\nb", "a\rb", "\t", "\x00", "\x1b[31m", "\u202e", "\u2028", "\ufeff", "é", "💥",
                 "x" * 300, "y" * 70_000, "../escape", "/abs", "C:\\win", "a:b", "vectors:", ":x", "all", "1:2",
                 "-1:", "::", "add", "resid_post", "true", "null", "~", "<<", "&a", "*a", "!!str", "%TAG"]
SITES = ["resid_post", "resid_pre", "attn_out", "mlp_out", "mlp_act", "attn_heads", "embed", "final_norm",
         "logits", "router", "resid_psot"]


def wild() -> st.SearchStrategy[Any]:
    """Any value at all: edge numbers, odd strings, wrong types, empty and deeply nested containers."""
    scalars = st.one_of(st.sampled_from(HUGE_INTS), st.sampled_from(EDGE_FLOATS), st.sampled_from(WEIRD_STRINGS),
                        st.booleans(), st.none(), st.integers(-5, 40), st.floats(allow_nan=True, allow_infinity=True),
                        st.text(max_size=8))
    nested = st.integers(30, 400).map(lambda depth: _nest(depth))
    return st.one_of(scalars, nested, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=5), scalars,
                                                                                      max_size=3),
                     st.just([]), st.just({}), st.just([[]]), st.integers(0, 40).map(lambda n: [1.0] * n))


def _nest(depth: int) -> Any:
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"not": value}
    return value


def numbers() -> st.SearchStrategy[Any]:
    """Mostly ordinary numbers, sometimes edge ones."""
    return _often(st.one_of(st.floats(-4, 4, allow_nan=False), st.integers(-3, 3)),
                  st.one_of(st.sampled_from(EDGE_FLOATS), st.sampled_from([1e9, 1e11, 2e11, 6e11, 1e14, 1e20, 1e28,
                                                                            5e37])))


def vector() -> st.SearchStrategy[Any]:
    """An inline vector, an artifact reference or a vector source (mostly fitting the tiny model)."""
    inline = st.lists(numbers(), min_size=WIDTH, max_size=WIDTH)
    small = st.lists(st.floats(-2, 2, allow_nan=False), min_size=WIDTH, max_size=WIDTH)
    good_refs = st.sampled_from(["v:vec", "v:per", "v:dirs"])
    bad_refs = st.sampled_from(["v:empty", "v:missing", "w:vec", "v:rec"])
    other = st.one_of(st.lists(numbers(), min_size=0, max_size=3), st.just({"source": "unembedding",
                                                                             "positive": [3], "negative": [4]}))
    return _often(st.one_of(small, inline, good_refs), st.one_of(bad_refs, other, st.lists(small, min_size=1,
                                                                                              max_size=3)))


def _often(usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], odds: int = 6) -> st.SearchStrategy[Any]:
    """``usual``, and ``rare`` about once in ``odds`` draws (hypothesis starts from ``usual``, its simplest)."""
    return st.integers(0, odds * 4).flatmap(lambda n: rare if n % odds == odds - 1 else usual)


def layers() -> st.SearchStrategy[Any]:
    usual = st.one_of(st.integers(-3, 2), st.lists(st.integers(-3, 2), min_size=1, max_size=2, unique=True),
                      st.sampled_from(["all", "0:2", "1:", ":-1"]))
    rare = st.one_of(st.integers(-5, 5), st.lists(st.integers(-5, 5), max_size=3),
                     st.sampled_from(["5:9", "0:99999999999", "x"]), st.sampled_from(HUGE_INTS))
    return _often(usual, rare, odds=8)


def positions() -> st.SearchStrategy[Any]:
    bound = _often(st.integers(-4, 8), st.sampled_from([*HUGE_INTS, 2**31 - 1, -(2**31) + 1]), odds=10)
    ranges = st.fixed_dictionaries({}, optional={"from": bound, "to": bound})
    named = st.sampled_from(["all", "prompt", "generated", "last_prompt"])
    return _often(st.one_of(named, ranges, st.lists(st.one_of(named, ranges), min_size=1, max_size=3)),
                  st.one_of(st.just("promt"), st.just([])), odds=10)


def schedule() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({}, optional={
        "start": _often(st.integers(0, 4), st.sampled_from([*HUGE_INTS, 2**31 - 1]), odds=10),
        "stop": _often(st.integers(5, 9), st.sampled_from([*HUGE_INTS, 2**31 - 1, 1]), odds=10),
        "decay": _often(st.sampled_from(["none", "exponential"]), st.sampled_from(["linear", "lin"]), odds=10),
        "rate": _often(st.floats(0.01, 1.0), st.sampled_from(EDGE_FLOATS))})


def condition(depth: int = 3) -> st.SearchStrategy[Any]:
    leaf = st.fixed_dictionaries({"probe": _often(st.just("p"), st.just("q")), "above": st.floats(-2, 2)})
    if depth == 0:
        return leaf
    inner = condition(depth - 1)
    return st.one_of(leaf, st.builds(lambda c: {"not": c}, inner), st.builds(lambda cs: {"any": cs},
                                                                              st.lists(inner, min_size=1, max_size=2)))


# ------------------------------------------------------------------------------------------ documents

OP_FIELDS: dict[str, Callable[[], dict[str, st.SearchStrategy[Any]]]] = {
    "add": lambda: {"vector": vector(), "normalize": st.booleans()},
    "ablate": lambda: {"vector": vector()},
    "clamp": lambda: {"vector": vector(), "value": numbers()},
    "scale": lambda: {"factor": numbers()},
    "neurons": lambda: {"units": st.lists(st.integers(0, 70), min_size=1, max_size=3, unique=True),
                        "shift": st.lists(numbers(), min_size=1, max_size=3)},
    "affine": lambda: {"shift": vector(), "scale": vector()},
    "project_out": lambda: {"basis": st.sampled_from(["v:basis", "v:dirs", "v:empty", [[1.0] + [0.0] * 31]])},
    "subspace_set": lambda: {"basis": st.just("v:basis"), "values": st.lists(numbers(), min_size=1, max_size=2)},
    "sparsify": lambda: {"top_k": st.one_of(st.integers(1, 80), st.sampled_from(HUGE_INTS))},
    "patch": lambda: {"recording": st.sampled_from(["v:resid_post", "v:rec", "v:empty"])},
    "heads": lambda: {"heads": st.lists(st.integers(0, 5), min_size=1, max_size=2),
                      "mode": st.sampled_from(["zero", "scale", "add"]), "factor": numbers()},
    "experts": lambda: {"disable": st.lists(st.integers(0, 5), max_size=2, unique=True),
                        "force": st.lists(st.integers(0, 5), max_size=1), "bias": st.lists(numbers(), min_size=4,
                                                                                            max_size=4)},
}


@st.composite
def intervention(draw: Any, index: int, probes: bool) -> dict[str, Any]:
    op = draw(_often(st.sampled_from(list(OP_FIELDS)), st.sampled_from(["ablat", "sae_add"]), odds=20))
    site = {"neurons": "mlp_act", "sparsify": "mlp_act", "heads": "attn_heads", "experts": "router"}.get(op,
                                                                                                     "resid_post")
    item: dict[str, Any] = {"id": draw(_often(st.just(f"i{index}"), st.sampled_from(["i0", "bad id", "x" * 65]),
                                              odds=20)),
                            "op": op, "site": draw(_often(st.just(site), st.sampled_from(SITES), odds=12)),
                            "layers": draw(layers())}
    for name, strategy in OP_FIELDS.get(op, dict)().items():
        if draw(st.integers(0, 19)) != 19:
            item[name] = draw(strategy)
    optional = {"strength": numbers(), "positions": positions(), "schedule": schedule(), "enabled": st.booleans(),
                **({"when": condition()} if probes or draw(st.integers(0, 9)) == 9 else {})}
    for name, strategy in optional.items():
        if not draw(st.integers(0, 3)):
            item[name] = draw(strategy)
    if draw(st.integers(0, 19)) == 19:
        item["strenght"] = 1.0
    return item


@st.composite
def documents(draw: Any) -> dict[str, Any]:
    """A recipe document over the whole schema, mostly fitting the tiny model, often with mistakes."""
    doc: dict[str, Any] = {"apiVersion": draw(_often(st.just("steerplug/v1"), st.sampled_from(
                               ["steerplug/v1alpha1", "steerplug/v9", 1]), odds=20)),
                           "kind": "Recipe",
                           "metadata": {"name": draw(_often(st.just("fz"), st.just("bad name"), odds=20))}}
    if draw(st.booleans()):
        doc["model"] = {"model_type": "llama", "hidden_size": draw(st.sampled_from([WIDTH, WIDTH, 64])),
                        "num_layers": draw(st.sampled_from([LAYERS, LAYERS, 2]))}
    if draw(st.integers(0, 3)) != 3:
        doc["artifacts"] = {"v": {"path": draw(_often(st.just("vectors.safetensors"), st.sampled_from([
            "missing.safetensors", "a" * 300 + ".safetensors", "../x.safetensors", "v.pt", "sub/v.safetensors"]),
            odds=10)), "sha256": SHA}}
    probes = draw(st.integers(0, 2)) == 2
    doc["interventions"] = [draw(intervention(i, probes)) for i in range(draw(st.integers(1, 3)))]
    if probes:
        kind = draw(_often(st.sampled_from(["linear", "cosine"]), st.just("lineer"), odds=12))
        doc["probes"] = [{"id": "p", "kind": kind, "site": "resid_post",
                          "layer": draw(_often(st.integers(-3, 2), st.one_of(layers(), st.integers(-9, 9)))),
                          "vector" if kind == "cosine" else "weights": draw(vector())}]
    if draw(st.integers(0, 5)) == 0:
        doc["monitors"] = [{"stat": ["rms"], "sites": ["resid_post"], "layers": draw(layers())}]
    for _ in range(draw(_often(st.just(0), st.integers(1, 2), odds=6))):
        _mutate(doc, draw)
    return doc


def _mutate(doc: dict[str, Any], draw: Any) -> None:
    """Replace, delete or add one value anywhere in ``doc``."""
    places = list(_places(doc))
    parent, key = places[draw(st.integers(0, len(places) - 1))]
    action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    if action == "replace":
        parent[key] = draw(wild())
    elif action == "delete":
        del parent[key]
    elif isinstance(parent, dict):
        parent[draw(st.sampled_from(["strenght", "extra", "$schema", "5"]))] = draw(wild())


def _places(node: Any) -> Iterator[tuple[Any, Any]]:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in list(items):
        yield node, key
        if isinstance(child, (dict, list)):
            yield from _places(child)


# --------------------------------------------------------------------------------- bytes and bundles

ATTACK_TOKENS = [b"&a ", b"*a", b"!!python/object/apply:os.system ['true'] ", b"<<: ", b"? [a]\n: 1\n",
                 b"[" * 1200, b"{" * 60, b"\x00", b"\t", b"\xff\xfe", b"\xed\xa0\x80", b'"\\U00110000"',
                 b'"\\ud800"', b"9" * 5000, b"1e999", b"-.inf", b".nan", b"5: x\n", b"1.5: x\n", b"true: x\n",
                 b"\n---\n", b"%YAML 1.1\n", b"!include x", b"~: 1\n", b"'", b'"', b"#", b"\r\n", b"\xc3"]


@st.composite
def byte_mutations(draw: Any, data: bytes) -> bytes:
    """``data`` with a few random byte-level edits (flips, attack tokens, cuts, duplications)."""
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "token", "token", "cut", "dup", "truncate"]))
        if action == "flip" and at < len(data):
            data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1:]
        elif action == "token":
            data = data[:at] + draw(st.sampled_from(ATTACK_TOKENS)) + data[at:]
        elif action == "cut":
            data = data[:at] + data[at + draw(st.integers(1, 40)):]
        elif action == "dup":
            data = data[:at] + data[at:at + draw(st.integers(1, 200))] * draw(st.integers(2, 50)) + data[at:]
        else:
            data = data[:at]
    return data


BUNDLE_ATTACKS = ["none"] * 60 + ["deep-header", "float8", "zero-rows", "huge-header", "bad-offsets",
                  "truncated", "fifo-artifact", "fifo-recipe", "symlink", "dir-artifact", "nan-tensor",
                  "pickle-bytes", "int-tensor", "metadata-object", "many-tensors"]


MODELS = ("llama", "gpt2", "qwen2_moe", "mixtral")
"""Tiny models (32 wide, 3 layers) the accepted cases attach to; the MoE ones have 4 experts, 2 per token."""


@dataclass
class Case:
    """One fuzz case: the document text, how the bundle around it is attacked, and the model it meets."""

    text: bytes
    suffix: str = ".yaml"
    attack: str = "none"
    model: str = "llama"


@st.composite
def cases(draw: Any) -> Case:
    """A fuzz case: a schema-aware document, serialised as YAML or JSON, sometimes mutated byte by byte, in a
    bundle that is sometimes attacked."""
    doc = draw(documents())
    suffix = draw(st.sampled_from([".yaml", ".yaml", ".json"]))
    text = _serialise(doc, suffix)
    if draw(_often(st.just(False), st.just(True), odds=6)):
        text = draw(byte_mutations(text))
    model_name = draw(_often(st.just("llama"), st.sampled_from(MODELS[1:]), odds=2))
    return Case(text=text, suffix=suffix, attack=draw(st.sampled_from(BUNDLE_ATTACKS)), model=model_name)


def _serialise(doc: Any, suffix: str) -> bytes:
    text = json.dumps(doc, allow_nan=True)  # JSON is YAML too; NaN/Infinity and surrogates stay in as escapes
    if suffix == ".yaml":
        text = text.replace("NaN", ".nan").replace("-Infinity", "-.inf").replace("Infinity", ".inf")
    return text.encode("utf-8")


def bundle_tensors() -> dict[str, torch.Tensor]:
    """The tensors of ``vectors.safetensors`` in every case's bundle."""
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(WIDTH, 2, generator=generator))
    table = {"vec": torch.randn(WIDTH, generator=generator), "dirs": torch.randn(2, WIDTH, generator=generator),
             "basis": basis.T.contiguous(), "rec": torch.randn(5, WIDTH, generator=generator)}
    table.update({f"per.{layer}": torch.randn(WIDTH, generator=generator) for layer in range(LAYERS)})
    table.update({f"resid_post.{layer}": torch.randn(4, WIDTH, generator=generator) for layer in range(LAYERS)})
    return table


def write_case(case: Case, folder: Path) -> Path:
    """Write the case's bundle into ``folder`` and return the path to load."""
    tensors = folder / "vectors.safetensors"
    save_file(bundle_tensors(), str(tensors))
    _attack_artifact(case.attack, tensors, folder)
    digest = sha256_file(tensors) if tensors.is_file() and not tensors.is_symlink() else SHA
    recipe = folder / f"recipe{case.suffix}"
    recipe.write_bytes(case.text.replace(SHA.encode(), digest.encode()))
    if case.attack == "fifo-recipe":
        recipe.unlink()
        os.mkfifo(recipe)
    return recipe


def _attack_artifact(attack: str, tensors: Path, folder: Path) -> None:
    header = {"vec": {"dtype": "F32", "shape": [WIDTH], "data_offsets": [0, 4 * WIDTH]}}
    data = b"\0" * (4 * WIDTH)
    if attack == "deep-header":
        _raw_safetensors(tensors, b"[" * 100_000 + b"]" * 100_000, data)
    elif attack == "float8":
        _raw_safetensors(tensors, json.dumps({"vec": {"dtype": "F8_E4M3", "shape": [WIDTH],
                                                      "data_offsets": [0, WIDTH]}}).encode(), data[:WIDTH])
    elif attack == "zero-rows":
        save_file({"vec": torch.zeros(0, WIDTH), "rec": torch.zeros(0, WIDTH), "basis": torch.zeros(0, WIDTH),
                   **{f"resid_post.{i}": torch.zeros(0, WIDTH) for i in range(LAYERS)}}, str(tensors))
    elif attack == "huge-header":
        tensors.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    elif attack == "bad-offsets":
        header["vec"]["data_offsets"] = [0, 2**40]
        _raw_safetensors(tensors, json.dumps(header).encode(), data)
    elif attack == "truncated":
        tensors.write_bytes(tensors.read_bytes()[:100])
    elif attack == "fifo-artifact":
        tensors.unlink()
        os.mkfifo(tensors)
    elif attack == "symlink":
        real = folder / "real.safetensors"
        tensors.rename(real)
        tensors.symlink_to(real)
    elif attack == "dir-artifact":
        tensors.unlink()
        tensors.mkdir()
    elif attack == "nan-tensor":
        save_file({"vec": torch.full((WIDTH,), float("nan"))}, str(tensors))
    elif attack == "pickle-bytes":
        tensors.write_bytes(b"\x80\x04\x95" + b"cos\nsystem\n" * 10)
    elif attack == "int-tensor":
        save_file({"vec": torch.arange(WIDTH)}, str(tensors))
    elif attack == "metadata-object":
        _raw_safetensors(tensors, json.dumps({"__metadata__": {"a": {"b": 1}}, **header}).encode(), data)
    elif attack == "many-tensors":
        entries = {f"t{i}": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]} for i in range(20_000)}
        _raw_safetensors(tensors, json.dumps(entries).encode(), b"\0" * 4)


def _raw_safetensors(path: Path, header: bytes, data: bytes) -> None:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


# ------------------------------------------------------------------------------------------- oracle

@cache
def model(name: str = "llama") -> torch.nn.Module:
    """A tiny float32 model of :data:`MODELS` (cached; cases must leave it as they found it)."""
    import transformers as tf

    torch.manual_seed(0)
    common = {"vocab_size": 64, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": None}
    moe = {"num_local_experts": 4, "num_experts": 4, "num_experts_per_tok": 2}
    if name == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=WIDTH, n_layer=LAYERS, n_head=4, **common)).eval()
    sizes = {"hidden_size": WIDTH, "intermediate_size": 64, "num_hidden_layers": LAYERS, "num_attention_heads": 4,
             "num_key_value_heads": 2, **common}
    if name == "qwen2_moe":
        config: Any = tf.Qwen2MoeConfig(**sizes, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                                        shared_expert_intermediate_size=16, decoder_sparse_step=1,
                                        mlp_only_layers=[])
        return tf.Qwen2MoeForCausalLM(config).eval()
    if name == "mixtral":
        return tf.MixtralForCausalLM(tf.MixtralConfig(**sizes, **{k: v for k, v in moe.items()
                                                                  if k != "num_experts"})).eval()
    return tf.LlamaForCausalLM(tf.LlamaConfig(**sizes)).eval()


INPUTS = {"input_ids": torch.tensor([[0, 1, 5, 9], [1, 7, 3, 2]]), "attention_mask": torch.tensor([[0, 1, 1, 1],
                                                                                                    [1, 1, 1, 1]])}


@cache
def baseline(name: str) -> torch.Tensor:
    with torch.no_grad():
        return model(name)(**INPUTS).logits.clone()


def hooks(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


class CaseTimeout(Exception):
    """A case ran past :data:`CASE_SECONDS`."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`CaseTimeout` in the main thread after ``seconds`` (a blocking open is interrupted too)."""
    def expire(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"no answer after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def unclean(error: BaseException) -> str | None:
    """Why a refusal is not clean (None when every line is one clean, located, bounded line)."""
    text = str(error)
    lines = text.split("\n")
    if isinstance(error, RecipeError):
        if [str(p) for p in error.problems] != lines or len(lines) > 101:
            return f"problem lines do not match the message ({len(lines)} lines)"
        bad = [line for line in lines if not LOCATED.match(line)]
        if bad:
            return f"unlocated line {bad[0][:120]!r}"
    elif len(lines) != 1:
        return f"{type(error).__name__} message has {len(lines)} lines"
    for line in lines:
        if not line.isprintable() or len(line) > MAX_LINE:
            return f"unclean line ({len(line)} chars): {line[:120]!r}"
    return None


def run_case(case: Case, seconds: float = CASE_SECONDS) -> tuple[str, str | None]:
    """Run one case; return ``(outcome, failure)`` where outcome is ``refused``, ``refused-attach`` or
    ``ran``, and failure is None or what went wrong."""
    folder = Path(tempfile.mkdtemp(prefix="steerplug-fuzz-"))
    try:
        path = write_case(case, folder)
        with time_limit(seconds):
            return _run(path, case.model)
    except CaseTimeout as exc:
        return "hang", f"hang: {exc}"
    except Exception as exc:  # the oracle's own verdict on anything unexpected
        return "traceback", f"traceback: {type(exc).__name__}: {str(exc)[:300]}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(path: Path, name: str) -> tuple[str, str | None]:
    failure = _check_cli(path)
    if failure:
        return "cli", failure
    try:
        recipe = steerplug.load_recipe(str(path), locked=False)
    except SteerplugError as exc:
        return "refused", unclean(exc)
    target = model(name)
    try:
        handle = steerplug.steer(target, recipe)
    except SteerplugError as exc:
        if hooks(target) or Host.existing(target) is not None:
            return "refused-attach", "failed attach left hooks behind"
        return "refused-attach", unclean(exc) or _unchanged(target, name)
    with handle, torch.no_grad():
        logits = target(**INPUTS).logits
        generated = target.generate(**INPUTS, max_new_tokens=3, do_sample=False)
        scores = target(input_ids=generated, attention_mask=torch.ones_like(generated)).logits
    if not bool(torch.isfinite(logits).all() and torch.isfinite(scores).all()):
        return "ran", "accepted, then the forward produced inf/NaN"
    return "ran", _unchanged(target, name)


def _unchanged(target: torch.nn.Module, name: str) -> str | None:
    if hooks(target):
        return "hooks left after detach"
    with torch.no_grad():
        again = target(**INPUTS).logits
    return None if torch.equal(again, baseline(name)) else "detach did not restore the outputs bitwise"


def _check_cli(path: Path) -> str | None:
    """``steerplug validate`` on the case, printing to an ASCII-only stdout: exit 0 or 1, clean lines."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")
    with redirect_stdout(out):
        code = cli_main(["validate", str(path)])
    out.flush()
    lines = out.buffer.getvalue().decode("ascii").splitlines()  # type: ignore[attr-defined]
    if code not in (0, 1) or not lines or any(len(line) > MAX_LINE * 4 for line in lines):
        return f"validate exited {code} with {len(lines)} lines"
    return None
