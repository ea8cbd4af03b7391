"""The fleet benchmark: its workload, its headline rule, and one run of its sessions through the real vllm-router in
front of two `agentcache serve` replicas, the replicas' counters against the sessions' own usage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentcache.fleet.launch import FleetSpec, core_count, replica_command
from benchmarks import fleet
from tests.agentcache.test_fleet_router import MODEL, two_replicas_behind_router


@pytest.fixture()
def router_fleet():
    yield from two_replicas_behind_router()


def run(policy: str, seed: int, cached: int, per_replica: tuple[int, int], p95: float = 10.0) -> dict:
    return {"policy": policy, "seed": seed, "cached_tokens": cached, "prompt_tokens": 100_000,
            "prefill_tokens": 100_000 - cached, "requests_per_replica": {"a": per_replica[0], "b": per_replica[1]},
            "ttft_p50_s": 1.0, "ttft_p95_s": p95, "wall_s": 100.0}


def test_the_workload_is_16_sessions_on_4_repositories_and_a_seed_only_reorders_it():
    specs = fleet.sessions()
    assert len(specs) == 16 and len({s.repo for s in specs}) == 4
    assert all(sum(s.repo == repo for s in specs) == 4 for repo in {s.repo for s in specs})
    assert all(s.path.is_dir() for s in specs) and len({s.question for s in specs}) == 16
    first, second = fleet.arrival_order(0), fleet.arrival_order(1)
    assert sorted(map(str, first)) == sorted(map(str, second)) and first != second
    assert fleet.arrival_order(0) == first


def test_percentile_is_the_nearest_rank():
    values = [float(v) for v in range(1, 21)]
    assert fleet.percentile(values, 50) == 10.0 and fleet.percentile(values, 95) == 19.0
    assert fleet.percentile([3.0], 95) == 3.0 and fleet.percentile([], 50) is None


def test_the_headline_is_the_most_reuse_among_policies_whose_busiest_replica_serves_at_most_60_percent():
    report = {"ceiling": {"cached_tokens": 80_000}, "runs": [
        run("round_robin", 0, 40_000, (50, 50), p95=20.0), run("round_robin", 1, 42_000, (50, 50), p95=22.0),
        run("session", 0, 79_000, (90, 10)), run("session", 1, 78_000, (85, 15)),  # more reuse, one replica busy
        run("session_sticky", 0, 70_000, (55, 45), p95=12.0), run("session_sticky", 1, 72_000, (58, 42), p95=14.0),
    ]}
    result = fleet.summary(report)
    assert result["headline"] == "session_sticky"
    sticky = result["policies"]["session_sticky"]
    assert sticky["cached_tokens"] == 71_000 and sticky["busiest_share"] == pytest.approx((0.55 + 0.58) / 2)
    assert sticky["x_round_robin_cached"] == pytest.approx(71_000 / 41_000)
    assert sticky["of_ceiling"] == pytest.approx(71_000 / 80_000)
    assert sticky["x_round_robin_ttft_p95"] == pytest.approx(13.0 / 21.0)
    assert result["policies"]["session"]["busiest_share"] == pytest.approx(0.875)


def test_the_cached_share_is_cached_over_prompt_tokens_whatever_the_number_of_requests():
    report = {"ceiling": {"cached_tokens": 90_000, "runs": [{"cached_tokens": 90_000, "prompt_tokens": 100_000}]},
              "runs": [run("round_robin", 0, 60_000, (50, 50)),
                       {**run("session", 0, 66_000, (50, 50)), "prompt_tokens": 110_000}]}
    rows = fleet.summary(report)["policies"]
    assert rows["round_robin"]["cached_share"] == pytest.approx(0.6)
    assert rows["session"]["cached_share"] == pytest.approx(0.6)  # more cached tokens, from more prompt tokens
    assert rows["session"]["share_of_ceiling_share"] == pytest.approx(0.6 / 0.9)
    assert rows["session"]["of_ceiling"] == pytest.approx(66_000 / 90_000)


def test_no_headline_when_every_policy_loads_one_replica_past_60_percent():
    report = {"ceiling": {"cached_tokens": None}, "runs": [run("session", 0, 79_000, (61, 39))]}
    result = fleet.summary(report)
    assert result["headline"] is None and result["policies"]["session"]["of_ceiling"] is None


@pytest.mark.parametrize("key, value, said", [("cpu", {"model": "another CPU"}, "another machine"),
                                               ("replica_kv_tokens", 4096, "another KV size")])
def test_runs_from_another_machine_or_kv_size_are_never_mixed_into_one_file(tmp_path, key, value, said):
    path = tmp_path / "fleet.json"
    workload = {"replica_kv_tokens": 16384, "cpu": fleet.cpu_report(), key: value}
    path.write_text(json.dumps({"workload": workload, "ceiling": {"runs": []}, "runs": []}))
    with pytest.raises(SystemExit, match=said):  # before any replica starts
        fleet.main(["--json", str(path), "--state", str(tmp_path / "state")])
    assert not (tmp_path / "state").exists()


def test_a_replica_gets_its_kv_blocks_and_as_many_threads_as_cores():
    spec = FleetSpec(Path("vllm"), Path("router"), Path("m"), "m", "bfloat16", Path("s"), kv_blocks=128)
    command = replica_command(spec, 8101)
    assert command[command.index("--num-gpu-blocks-override") + 1] == "128"
    plain = replica_command(FleetSpec(Path("v"), Path("r"), Path("m"), "m", "bfloat16", Path("s")), 8101)
    assert "--num-gpu-blocks-override" not in plain and "--max-model-len" not in plain  # the model's own length
    assert "--max-model-len" not in command
    limited = FleetSpec(Path("v"), Path("r"), Path("m"), "m", "bfloat16", Path("s"), max_model_len=12288)
    limited_command = replica_command(limited, 8101)
    assert limited_command[limited_command.index("--max-model-len") + 1] == "12288"
    assert [core_count(c) for c in (0, "3", "0-1", "0,2-3")] == [1, 1, 2, 3]


@pytest.mark.slow
def test_a_run_through_the_router_counts_what_the_sessions_sent(router_fleet):
    router, _, replicas = router_fleet
    order = fleet.arrival_order(0)[:4]
    result = fleet.measured(list(replicas), router + "/v1", MODEL, "session", order, 0.0, 2)
    client = result["client"]
    assert len(result["sessions"]) == 4 and client["requests"] >= 4
    assert sum(result["requests_per_replica"].values()) == client["requests"]
    assert (result["prompt_tokens"], result["cached_tokens"]) == (client["prompt_tokens"], client["cached_tokens"])
    assert result["prefill_tokens"] == result["prompt_tokens"] - result["cached_tokens"]
    assert client["ttft_from_stream"] == client["requests"]
    assert 0 < result["ttft_p50_s"] <= result["ttft_p95_s"] <= result["wall_s"]
