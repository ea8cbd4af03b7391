import json
import random
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from layers import PromptError, ToolRegistry, ToolSpec, build_l1
from layers.tools import load_tool_spec
from tests.layers.conftest import PROMPTS_DIR

EXPECTED_TOOLS = ["edit_file", "finish", "list_files", "read_file", "run_command", "run_tests", "search", "write_file"]
BUNDLED = list(ToolRegistry.from_dir(PROMPTS_DIR / "tools"))


def shuffled(value, rng: random.Random):
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


def test_bundled_tools_are_strict_json_schemas():
    assert [spec.name for spec in BUNDLED] == EXPECTED_TOOLS
    for spec in BUNDLED:
        assert spec.parameters["type"] == "object"
        assert spec.parameters["additionalProperties"] is False
        assert set(spec.parameters["required"]) <= set(spec.parameters["properties"])
    read_file = {s.name: s for s in BUNDLED}["read_file"].parameters
    assert set(read_file["properties"]) == {"path", "start_line", "end_line"}


def test_render_is_canonical_json_sorted_by_name():
    text = ToolRegistry(BUNDLED).render()
    assert text.endswith("\n") and text.count("\n") == 1
    data = json.loads(text)
    assert [t["name"] for t in data] == EXPECTED_TOOLS
    assert text == json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


@given(st.randoms(use_true_random=False))
def test_tool_order_and_schema_key_order_do_not_change_the_bytes(rng):
    specs = [ToolSpec(s.name, s.description, shuffled(s.parameters, rng), s.raw) for s in BUNDLED]
    rng.shuffle(specs)
    assert ToolRegistry(specs).render() == ToolRegistry(BUNDLED).render()


@settings(max_examples=15, deadline=None)
@given(st.randoms(use_true_random=False))
def test_shuffled_yaml_files_give_identical_l1_bytes(rng):
    with tempfile.TemporaryDirectory() as tmp:
        assert_shuffled_yaml_gives_same_l1(Path(tmp) / "prompts", rng)


def assert_shuffled_yaml_gives_same_l1(prompts: Path, rng: random.Random) -> None:
    shutil.copytree(PROMPTS_DIR, prompts)
    for path in (prompts / "tools").glob("*.yaml"):
        data = shuffled(yaml.safe_load(path.read_text(encoding="utf-8")), rng)
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    assert [b.content for b in build_l1("coder", prompts)] == [b.content for b in build_l1("coder", PROMPTS_DIR)]


def test_duplicate_and_malformed_specs(tmp_path):
    spec = BUNDLED[0]
    with pytest.raises(PromptError, match="duplicate"):
        ToolRegistry([spec, spec])
    bad = tmp_path / "oops.yaml"
    bad.write_text("name: other\ndescription: d\nparameters: {type: object}\n", encoding="utf-8")
    with pytest.raises(PromptError, match="does not match the file name"):
        load_tool_spec(bad)
    bad.write_text("name: oops\ndescription: d\nparameters: {type: string}\n", encoding="utf-8")
    with pytest.raises(PromptError, match="type: object"):
        load_tool_spec(bad)
    bad.write_text("name: oops\nparameters: {type: object}\n", encoding="utf-8")
    with pytest.raises(PromptError, match="'description'"):
        load_tool_spec(bad)
