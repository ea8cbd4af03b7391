import shutil

import pytest

from layers import Layer, PromptError, ToolRegistry, available_roles, build_l1, lint_blocks
from layers.prompts import load_prompt
from tests.layers.conftest import PROMPTS_DIR


def test_l1_blocks_are_system_role_tools():
    blocks = build_l1("reviewer", PROMPTS_DIR)
    assert [(b.layer, b.kind, b.key) for b in blocks] == [
        (Layer.L1, "system", "system.md"),
        (Layer.L1, "role", "roles/reviewer.md"),
        (Layer.L1, "tools", "tools"),
    ]
    assert blocks[0].text == load_prompt(PROMPTS_DIR / "system.md").body
    assert blocks[2].text == ToolRegistry.from_dir(PROMPTS_DIR / "tools").render()


def test_bundled_prompts_have_every_role_and_no_volatile_content():
    assert available_roles(PROMPTS_DIR) == ["ask", "coder", "planner", "reviewer", "worker"]
    for role in available_roles(PROMPTS_DIR):
        assert lint_blocks(build_l1(role, PROMPTS_DIR), hostname="") == []


def test_roles_share_system_and_tools_blocks():
    coder, planner = build_l1("coder", PROMPTS_DIR), build_l1("planner", PROMPTS_DIR)
    assert coder[0] == planner[0] and coder[2] == planner[2]
    assert coder[1] != planner[1]


@pytest.mark.parametrize("role", ["nobody", "../system", "Coder"])
def test_unknown_or_unsafe_roles_are_refused(role):
    with pytest.raises(PromptError, match="unknown role"):
        build_l1(role, PROMPTS_DIR)


def test_missing_prompts_dir_and_system_prompt(tmp_path):
    with pytest.raises(PromptError, match="prompts directory not found"):
        build_l1("coder", tmp_path / "absent")
    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, prompts)
    (prompts / "system.md").unlink()
    with pytest.raises(PromptError, match="system.md: file not found"):
        build_l1("coder", prompts)
