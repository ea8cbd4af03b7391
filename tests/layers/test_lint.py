import shutil

import pytest

from layers import Block, Layer, VolatileContentError, build_l1, lint_blocks
from tests.layers.conftest import PROMPTS_DIR


def findings_for(text: str, hostname: str = "") -> list[tuple[str, str]]:
    block = Block(Layer.L2, "doc", "NOTES.md", text.encode("utf-8"))
    return [(f.rule, f.match) for f in lint_blocks([block], hostname=hostname)]


def test_planted_timestamp_and_uuid_in_a_prompt_are_found_with_byte_offsets(tmp_path):
    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, prompts)
    role = prompts / "roles" / "coder.md"
    planted = "Généré le 2024-05-17T09:30:00Z, run 123e4567-e89b-12d3-a456-426614174000.\n"
    role.write_text(role.read_text(encoding="utf-8") + planted, encoding="utf-8")
    blocks = build_l1("coder", prompts)
    findings = lint_blocks(blocks, hostname="")
    assert [(f.layer, f.kind, f.key, f.rule) for f in findings] == [
        ("L1", "role", "roles/coder.md", "datetime"),
        ("L1", "role", "roles/coder.md", "uuid"),
    ]
    content = blocks[1].content
    for finding in findings:
        match = finding.match.encode("utf-8")
        assert content[finding.offset : finding.offset + len(match)] == match
    assert findings[0].offset == content.index(b"2024-05-17")
    with pytest.raises(VolatileContentError, match="roles/coder.md at byte .*datetime"):
        lint_blocks(blocks, strict=True, hostname="")


@pytest.mark.parametrize(
    "text, rule, match",
    [
        ("released 2023-12-01 today", "date", "2023-12-01"),
        ("at 2023-12-01 10:00:05+02:00.", "datetime", "2023-12-01 10:00:05+02:00"),
        ("wrote /tmp/pytest-of-x/out.txt", "temp_path", "/tmp/pytest-of-x/out.txt"),
        ("see /var/folders/ab/T/x", "temp_path", "/var/folders/ab/T/x"),
        ("server pid 4242 started", "pid", "pid 4242"),
        ("pid=77", "pid", "pid=77"),
        ("config in /home/alice/.cfg", "home_path", "/home/alice"),
        ("config in /Users/bob/x", "home_path", "/Users/bob"),
        ("C:\\Users\\carol\\repo", "home_path", "C:\\Users\\carol"),
    ],
)
def test_rules(text, rule, match):
    assert (rule, match) in findings_for(text)


def test_windows_temp_path_and_hostname():
    found = findings_for("C:\\Users\\dan\\AppData\\Local\\Temp\\x.log on buildbox-7", hostname="buildbox-7")
    assert ("temp_path", "C:\\Users\\dan\\AppData\\Local\\Temp\\x.log") in found
    assert ("hostname", "buildbox-7") in found
    assert findings_for("short host abc", hostname="abc") == []


@pytest.mark.parametrize("text", ["version 1.2.3", "see tests/test_x.py", "2023-13-45", "v2024-01", "use ~/.config"])
def test_clean_text_has_no_findings(text):
    assert findings_for(text) == []


def test_l3_is_never_linted():
    block = Block(Layer.L3, "user", "user", b"at 2024-01-01T00:00:00Z in /tmp/x pid 5")
    assert lint_blocks([block], strict=True) == []
