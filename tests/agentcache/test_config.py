"""Settings: the permission mode from agentcache.yaml or a flag, allow_shell as its older spelling, and refusals
as one error line."""

import os
import subprocess
import sys

import pytest

from agentcache.config import SPECULATE, RunConfig, check_config, config_from
from agentcache.errors import AgentcacheError


def test_the_default_mode_is_edit():
    assert check_config(RunConfig()).mode == "edit"


@pytest.mark.parametrize(("data", "mode"), [
    ({"mode": "read-only"}, "read-only"), ({"mode": "full"}, "full"), ({"allow_shell": True}, "full"),
    ({"allow_shell": False}, "edit"), ({"allow_shell": True, "mode": "full"}, "full"),
    ({"allow_shell": False, "mode": "read-only"}, "read-only"),
])
def test_mode_comes_from_the_file_and_allow_shell_means_full(data, mode):
    assert check_config(config_from(data)).mode == mode


@pytest.mark.parametrize(("data", "message"), [
    ({"mode": "yolo"}, "mode must be one of read-only, edit, full, got 'yolo'"),
    ({"mode": 1}, "'mode' must be str, got int"),
    ({"allow_shell": True, "mode": "read-only"}, "'allow_shell: true' disagrees with 'mode: read-only'"),
    ({"allow_shell": False, "mode": "full"}, "'allow_shell: false' disagrees with 'mode: full'"),
    ({"allow_shell": "yes"}, "'allow_shell' must be bool, got str"),
    ({"mode": "read-only", "tools": ["read_file", "edit_file"]}, "mode read-only does not allow edit_file"),
    ({"tools": ["run_command"]}, "mode edit does not allow run_command (mode full does)"),
])
def test_bad_modes_are_refused(data, message):
    with pytest.raises(AgentcacheError) as caught:
        check_config(config_from(data))
    assert message in str(caught.value)


def run_cli(repo, *args):
    return subprocess.run([sys.executable, "-m", "agentcache.cli", "run", "hello", "--repo", str(repo), *args],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)


@pytest.mark.parametrize(("yaml_text", "args", "message"), [
    ("mode: yolo\n", [], "error: mode must be one of read-only, edit, full, got 'yolo'"),
    ("", ["--mode", "yolo"], "error: mode must be one of read-only, edit, full, got 'yolo'"),
    ("", ["--mode", "read-only", "--allow-shell"], "error: --allow-shell means --mode full; it disagrees with "
                                                   "--mode read-only"),
])
def test_a_bad_mode_is_one_error_line_and_exit_2(repo, yaml_text, args, message):
    (repo / "agentcache.yaml").write_text(yaml_text)
    proc = run_cli(repo, *args)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and lines == [message]
    assert not (repo / ".agentcache" / "sessions").exists()  # refused before anything ran


@pytest.mark.parametrize(("data", "message"), [
    ({"seed": -1}, "seed must be between 0 and 2**31 - 1, got -1"),
    ({"seed": 2**31}, f"seed must be between 0 and 2**31 - 1, got {2**31}"),
    ({"seed": "7"}, "'seed' must be int, got str"),
])
def test_bad_seeds_are_refused(data, message):
    with pytest.raises(AgentcacheError, match=message.replace("*", r"\*")):
        check_config(config_from(data))


def test_a_sampled_run_seeds_each_reply_by_its_seed_and_turn():
    from agentcache.agent import reply_seed

    assert reply_seed(check_config(config_from({"seed": 5})), 1) is None  # greedy: no seed
    sampled = [check_config(config_from({"temperature": 0.7, "seed": seed})) for seed in (1, 2)]
    seeds = [reply_seed(config, turn) for config in sampled for turn in range(1, 9)]
    assert len(set(seeds)) == len(seeds)
    assert reply_seed(sampled[0], 3) == reply_seed(check_config(config_from({"temperature": 0.7, "seed": 1})), 3)


def test_speculation_defaults_to_auto_and_takes_only_its_modes():
    from engine.speculate import MODES

    assert RunConfig().speculate == "auto" and check_config(config_from({"speculate": "off"})).speculate == "off"
    assert SPECULATE == MODES
    with pytest.raises(AgentcacheError, match="speculate must be one of off, lookup, draft, auto, got 'fast'"):
        check_config(config_from({"speculate": "fast"}))
