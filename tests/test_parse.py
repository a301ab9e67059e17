"""Bytes → dict: strict safe YAML (no tags, anchors, aliases, merge keys or duplicate keys), strict JSON,
UTF-8 only, and a byte cap checked before any parsing."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

import steerplug
from steerplug.errors import RecipeError
from steerplug.plugins import builtin_plugins_only
from steerplug.recipe.parse import MAX_RECIPE_BYTES, parse_document
from steerplug.recipe.sources import OpenedRecipe
from steerplug.recipe.yamlsafe import WITH_LIBYAML

needs_libyaml = pytest.mark.skipif(not WITH_LIBYAML, reason="wording of libyaml's parser (PyYAML wheels ship it)")

HEAD = "apiVersion: steerplug/v1\nkind: Recipe\nmetadata: {name: parse}\n"
CAP_HINT = "(recipes hold settings; put tensors in safetensors artifacts)"
DATA_ONLY = "is not allowed in recipes (recipes are data)"


def _yaml(text: str) -> Any:
    return parse_document(text.encode("utf-8"), "r.yaml", ".yaml")


def _json(text: str) -> Any:
    return parse_document(text.encode("utf-8"), "r.json", ".json")


def _refusal(parse: Any, data: Any) -> str:
    with pytest.raises(RecipeError) as exc:
        parse(data)
    assert len(exc.value.problems) == 1
    return str(exc.value.problems[0])


@pytest.mark.parametrize(("text", "line"), [
    ("a: !!python/object/apply:os.system ['touch pwned']\n",
     "r.yaml: /: line 1 column 4: YAML tag '!!python/object/apply:os.system' " + DATA_ONLY),
    ("a: !!python/name:os.system\n", "r.yaml: /: line 1 column 4: YAML tag '!!python/name:os.system' " + DATA_ONLY),
    ("a: !!python/object/new:os.system [ls]\n",
     "r.yaml: /: line 1 column 4: YAML tag '!!python/object/new:os.system' " + DATA_ONLY),
    ("a: !!str 1\n", "r.yaml: /: line 1 column 4: YAML tag '!!str' " + DATA_ONLY),
    ("a: !!binary aGVsbG8=\n", "r.yaml: /: line 1 column 4: YAML tag '!!binary' " + DATA_ONLY),
    ("a: !!set {x, y}\n", "r.yaml: /: line 1 column 4: YAML tag '!!set' " + DATA_ONLY),
    ("a: !include other.yaml\n", "r.yaml: /: line 1 column 4: YAML tag '!include' " + DATA_ONLY),
    ("!!str a: 1\n", "r.yaml: /: line 1 column 1: YAML tag '!!str' " + DATA_ONLY),
    ("a:\n  - !<tag:example.com,2024:x> 1\n",
     "r.yaml: /: line 2 column 5: YAML tag 'tag:example.com,2024:x' " + DATA_ONLY),
])
def test_yaml_tags_are_refused(text: str, line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _refusal(_yaml, text) == line
    assert list(tmp_path.iterdir()) == []  # nothing was constructed, let alone run


@pytest.mark.parametrize(("text", "line"), [
    ("a: &x 1\n", "r.yaml: /: line 1 column 4: YAML anchors and aliases are not allowed in recipes"),
    ("a: 1\nb: *x\n", "r.yaml: /: line 2 column 4: YAML anchors and aliases are not allowed in recipes"),
    ("a: [&x 1, *x]\n", "r.yaml: /: line 1 column 5: YAML anchors and aliases are not allowed in recipes"),
    ("base: &b {op: add}\nitem:\n  <<: *b\n",
     "r.yaml: /: line 1 column 7: YAML anchors and aliases are not allowed in recipes"),
    ("item:\n  <<: {op: add}\n  id: x\n",
     "r.yaml: /: line 2 column 3: YAML merge keys ('<<') are not allowed in recipes"),
    ("item:\n  <<: [{op: add}, {id: x}]\n",
     "r.yaml: /: line 2 column 3: YAML merge keys ('<<') are not allowed in recipes"),
])
def test_yaml_anchors_aliases_and_merge_keys_are_refused(text: str, line: str) -> None:
    assert _refusal(_yaml, text) == line


def test_billion_laughs_is_refused_at_the_first_anchor() -> None:
    rows = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    rows += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    text = "\n".join(rows) + "\n"
    assert _refusal(_yaml, text) == "r.yaml: /: line 1 column 4: YAML anchors and aliases are not allowed in recipes"


@pytest.mark.parametrize(("text", "line"), [
    ("a: 1\na: 2\n", "r.yaml: /: line 2 column 1: duplicate key 'a'"),
    ("a: {b: 1, c: 2, b: 3}\n", "r.yaml: /: line 1 column 17: duplicate key 'b'"),
    ("items:\n  - id: x\n    id: y\n", "r.yaml: /: line 3 column 5: duplicate key 'id'"),
    ("'1': a\n'1': b\n", "r.yaml: /: line 2 column 1: duplicate key '1'"),
])
def test_yaml_duplicate_keys_are_refused(text: str, line: str) -> None:
    assert _refusal(_yaml, text) == line


@pytest.mark.parametrize(("text", "line"), [
    ("? [a, b]\n: 1\n", "r.yaml: /: line 1 column 3: mapping keys must be plain names, not lists or mappings"),
    ("{[a]: 1}\n", "r.yaml: /: line 1 column 2: mapping keys must be plain names, not lists or mappings"),
    ("a: 1\n---\nb: 2\n",
     "r.yaml: /: invalid YAML at line 2 column 1: expected a single document in the stream, "
     "but found another document"),
    pytest.param("a:\n\tb: 1\n", "r.yaml: /: invalid YAML at line 2 column 1: found character that cannot start any "
                 "token", marks=needs_libyaml),
    ("a: 'x\n", "r.yaml: /: invalid YAML at line 2 column 1: found unexpected end of stream"),
])
def test_other_yaml_problems_are_located(text: str, line: str) -> None:
    assert _refusal(_yaml, text) == line


def test_yaml_1_2_floats() -> None:
    document = _yaml("a: 1e3\nb: -2.5E-3\nc: 1.0e+2\nd: 3\ne: 0.5\nf: 1e\n")
    assert document == {"a": 1000.0, "b": -0.0025, "c": 100.0, "d": 3, "e": 0.5, "f": "1e"}
    assert [type(document[k]) for k in "abcdef"] == [float, float, float, int, float, str]


def test_yaml_nan_and_inf_parse_so_that_validation_can_locate_them() -> None:
    document = _yaml("a: .nan\nb: -.inf\nc: .Inf\n")
    assert math.isnan(document["a"]) and document["b"] == -math.inf and document["c"] == math.inf


def test_yaml_byte_order_mark_is_accepted() -> None:
    assert parse_document(b"\xef\xbb\xbf" + HEAD.encode(), "r.yaml") == {
        "apiVersion": "steerplug/v1", "kind": "Recipe", "metadata": {"name": "parse"}
    }


@pytest.mark.parametrize(("text", "line"), [
    ('{"a": NaN}', "r.json: /: invalid JSON: NaN is not allowed in recipes"),
    ('{"a": [1, Infinity]}', "r.json: /: invalid JSON: Infinity is not allowed in recipes"),
    ('{"a": -Infinity}', "r.json: /: invalid JSON: -Infinity is not allowed in recipes"),
    ('{"a": 1e999}', "r.json: /: invalid JSON: number 1e999 is too large"),
    ('{"a": 1, "a": 2}', "r.json: /: invalid JSON: duplicate key 'a'"),
    ('{"a": {"b": 1, "b": 1}}', "r.json: /: invalid JSON: duplicate key 'b'"),
    ('{"a": 1,}', "r.json: /: invalid JSON at line 1 column 9: Expecting property name enclosed in double quotes"),
    ('{"a": 1}\n{"b": 2}', "r.json: /: invalid JSON at line 2 column 1: Extra data"),
    ("", "r.json: /: invalid JSON at line 1 column 1: Expecting value"),
    ("a: 1", "r.json: /: invalid JSON at line 1 column 1: Expecting value"),
    ("[]", "r.json: /: a recipe must be a mapping, got a list (start with 'apiVersion: steerplug/v1')"),
])
def test_json_is_strict(text: str, line: str) -> None:
    assert _refusal(_json, text) == line


def test_json_numbers() -> None:
    assert _json('{"a": 1e3, "b": -1.5E-2, "c": 7}') == {"a": 1000.0, "b": -0.015, "c": 7}


@pytest.mark.parametrize(("text", "kind"), [
    ("", "an empty document"), ("# only a comment\n", "an empty document"), ("- a\n", "a list"),
    ("hello\n", "a string"), ("42\n", "a number"), ("true\n", "true or false"),
])
def test_document_must_be_a_mapping(text: str, kind: str) -> None:
    assert _refusal(_yaml, text) == (f"r.yaml: /: a recipe must be a mapping, got {kind} "
                                     "(start with 'apiVersion: steerplug/v1')")


@pytest.mark.parametrize(("data", "line"), [
    (HEAD.encode() + b"x: caf\xe9\n",
     "r.yaml: /: not UTF-8 text: byte 0xe9 at line 4 column 7 (save the file as UTF-8)"),
    ("a: 1\n".encode("utf-16"), "r.yaml: /: not UTF-8 text: byte 0xff at line 1 column 1 (save the file as UTF-8)"),
    (b"\x80", "r.yaml: /: not UTF-8 text: byte 0x80 at line 1 column 1 (save the file as UTF-8)"),
])
def test_non_utf8_is_refused_with_its_place(data: bytes, line: str) -> None:
    assert _refusal(lambda d: parse_document(d, "r.yaml"), data) == line


def _padded(size: int) -> bytes:
    """A valid recipe of exactly ``size`` bytes (a trailing comment pads it)."""
    data = HEAD.encode() + b"#"
    return data + b"x" * (size - len(data) - 1) + b"\n"


def test_default_cap_admits_a_document_of_exactly_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(_padded(MAX_RECIPE_BYTES))
    assert path.stat().st_size == MAX_RECIPE_BYTES == 1 << 20
    assert steerplug.load_recipe(str(path)).name == "parse"


def test_default_cap_refuses_one_byte_more(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(_padded(MAX_RECIPE_BYTES + 1))
    with pytest.raises(RecipeError) as exc:
        steerplug.load_recipe(str(path))
    assert str(exc.value) == f"{path}: /: document is larger than the 1048576-byte cap {CAP_HINT}"


def test_cap_is_checked_before_parsing(tmp_path: Path) -> None:
    # Over the cap and full of things the parser would refuse: only the size is reported.
    path = tmp_path / "r.yaml"
    path.write_bytes(b"a: !!python/object/apply:os.system ['x']\nb: &x [*x]\n" + b"{" * 200)
    with pytest.raises(RecipeError) as exc:
        steerplug.load_recipe(str(path), max_bytes=100)
    assert [str(p) for p in exc.value.problems] == [f"{path}: /: document is larger than the 100-byte cap {CAP_HINT}"]


def test_cap_counts_bytes_not_characters(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    text = HEAD + "# " + "é" * 30 + "\n"
    path.write_text(text, encoding="utf-8")
    cap = len(text) + 10  # enough characters, too few bytes: each 'é' is two
    assert len(text) < cap < len(text.encode("utf-8"))
    with pytest.raises(RecipeError) as exc:
        steerplug.load_recipe(str(path), max_bytes=cap)
    assert str(exc.value) == f"{path}: /: document is larger than the {cap}-byte cap {CAP_HINT}"
    assert steerplug.load_recipe(str(path), max_bytes=len(text.encode("utf-8"))).name == "parse"


class _GreedySource:
    """A recipe-source plugin that ignores ``max_bytes`` and always returns 250 bytes."""

    @steerplug.hookimpl
    def steerplug_open_recipe(self, ref: str, max_bytes: int) -> OpenedRecipe | None:
        if not ref.startswith("greedy://"):
            return None
        return OpenedRecipe(name=ref, data=_padded(250), root=None)


def test_cap_holds_for_source_plugins_that_ignore_it() -> None:
    plugins = builtin_plugins_only()
    plugins.register(_GreedySource())
    with pytest.raises(RecipeError) as exc:
        steerplug.load_recipe("greedy://recipe", max_bytes=200, plugins=plugins)
    assert str(exc.value) == f"greedy://recipe: /: document is larger than the 200-byte cap {CAP_HINT}"
    assert steerplug.load_recipe("greedy://recipe", max_bytes=250, plugins=plugins).name == "parse"


@pytest.mark.parametrize(("name", "line"), [
    ("missing.yaml", "{tmp}/missing.yaml: /: file not found"),
    ("folder", "{tmp}/folder: /: folder has no recipe.yaml "
               "(a bundle folder holds recipe.yaml, its .safetensors and README.md)"),
])
def test_missing_files(name: str, line: str, tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(RecipeError) as exc:
        steerplug.load_recipe(str(tmp_path / name))
    assert str(exc.value) == line.replace("{tmp}", str(tmp_path))


def test_plain_scalars_follow_yaml_1_2() -> None:
    doc = parse_document(b"a: yes\nb: on\nc: true\nd: 2024-01-01\ne: 1e3\nf: False\ng: 3\nh: null\n", "x.yaml")
    assert doc == {"a": "yes", "b": "on", "c": True, "d": "2024-01-01", "e": 1000.0, "f": False, "g": 3,
                   "h": None}


def test_pure_python_parser_builds_the_same_data_as_libyaml() -> None:
    from steerplug.recipe.yamlsafe import compose
    from tests.helpers.recipe_cases import VALID, valid_recipes

    texts = [p.read_text(encoding="utf-8") for p in valid_recipes() if p.suffix == ".yaml"]
    texts.append((VALID.parent / "invalid" / "key-not-string.yaml").read_text(encoding="utf-8"))
    for text in texts:
        assert compose(text, "r.yaml", pure_python=True) == compose(text, "r.yaml")


def test_pure_python_parser_meets_the_same_bounds() -> None:
    from steerplug.recipe.limits import BoundsExceeded
    from steerplug.recipe.yamlsafe import compose

    text = "a: " + "[" * 40 + "]" * 40 + "\n"
    for pure in (True, False):
        with pytest.raises(BoundsExceeded) as info:
            compose(text, "r.yaml", pure_python=pure)
        assert [p.message for p in info.value.problems] == ["line 1 column 36: nesting is deeper than 32 levels"]
