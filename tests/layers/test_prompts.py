import pytest

from layers import PromptError, load_prompt

GOOD = "---\nname: coder\ndescription: Writes code.\nversion: 2\n---\nBody line   \r\n\r\n\r\n"


def test_loads_front_matter_and_normalized_body(tmp_path):
    path = tmp_path / "coder.md"
    path.write_bytes(GOOD.encode())
    prompt = load_prompt(path)
    assert (prompt.name, prompt.description, prompt.version) == ("coder", "Writes code.", "2")
    assert prompt.body == "Body line\n"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("no front matter\n", "missing front matter"),
        ("---\nname: x\ndescription: y\nversion: 1\nbody\n", "not closed"),
        ("---\nname: [x\n---\nbody\n", "invalid YAML"),
        ("---\n- a list\n---\nbody\n", "must be a YAML mapping"),
        ("---\nname: x\nversion: 1\n---\nbody\n", "required key 'description'"),
        ("---\nname: x\ndescription: y\n---\nbody\n", "required key 'version'"),
        ("---\nname: x\ndescription: y\nversion: 1.10\n---\nbody\n", "'version' must be a string"),
        ("---\nname: x\ndescription: y\nversion: 1\n---\n\n", "body is empty"),
    ],
)
def test_broken_prompts_give_one_line_with_file_and_reason(tmp_path, text, reason):
    path = tmp_path / "broken.md"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PromptError) as info:
        load_prompt(path)
    message = str(info.value)
    assert "broken.md" in message and reason in message
    assert "\n" not in message


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(PromptError, match="absent.md: file not found"):
        load_prompt(tmp_path / "absent.md")
    bad = tmp_path / "latin.md"
    bad.write_bytes(b"---\nname: caf\xe9\n---\n")
    with pytest.raises(PromptError, match="latin.md: not valid UTF-8"):
        load_prompt(bad)
