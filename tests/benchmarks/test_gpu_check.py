"""benchmarks.gpu_check off the GPU: its model shapes are the registry models' own, its version checks and wheel
choice, and a quick run of every part (on a CPU it records no graph: its CUDA checks wait for a GPU machine)."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu_check
from engine.hardware import choose_dtype
from engine.model import converted_model_dir


@pytest.mark.parametrize("name", sorted(gpu_check.SHAPES))
def test_the_shapes_are_those_the_engine_converts_the_registry_models_to(models_dir, name):
    config = json.loads((converted_model_dir(name, choose_dtype("auto").dtype, models_dir) / "config.json").read_text())
    for key, want in gpu_check.SHAPES[name].items():
        got = config["rope_parameters"]["rope_theta"] if key == "rope_theta" else config[key]
        assert got == (pytest.approx(want, rel=1e-6) if isinstance(want, float) else want), key


def test_version_bounds():
    assert gpu_check.version_ok("5.24.0", ">=5.23,<5.25")
    assert gpu_check.version_ok("5.23.0+cpu", ">=5.23,<5.25")
    assert not gpu_check.version_ok("5.25.0", ">=5.23,<5.25")
    assert not gpu_check.version_ok("4.57.1", ">=5.23,<5.25")
    assert not gpu_check.version_ok(None, ">=3")


def test_wheels_are_chosen_where_a_need_is_missing_or_old_and_a_need_without_one_stops_with_one_line(
        monkeypatch, tmp_path):
    installed = {"transformers": "4.57.1", "xxhash": "3.5.0", "safetensors": "0.8.0", "tqdm": "4.67.0"}
    monkeypatch.setattr(gpu_check, "_version", installed.get)
    (tmp_path / "transformers-5.24.0-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "huggingface_hub-2.4.0-py3-none-any.whl").write_bytes(b"")  # not installed: chosen
    (tmp_path / "tqdm-4.60.0-py3-none-any.whl").write_bytes(b"")  # older than what is installed: kept out
    wheels = gpu_check.wheel_versions(tmp_path)
    assert wheels == {"transformers": "5.24.0", "huggingface-hub": "2.4.0", "tqdm": "4.60.0"}
    assert gpu_check.to_install(wheels) == ["huggingface-hub==2.4.0", "transformers==5.24.0"]
    installed["xxhash"] = None
    with pytest.raises(SystemExit, match=r"^gpu-check: missing xxhash>=3 \(installed: none\), and no wheel"):
        gpu_check.to_install(wheels)


def test_a_quick_run_checks_everything_and_its_ratios_are_its_measurements(tmp_path):
    out = tmp_path / "gpu-check.json"
    report = gpu_check.main(["--quick", "--json", str(out), "--wheels", str(tmp_path / "none")])
    assert json.loads(out.read_text()) == report
    assert report["versions"]["installed_from_wheels"] == []
    by_name = {c["check"]: c for c in report["checks"]}
    assert sorted(by_name) == ["batched_vs_single", "graphs_vs_eager", "host_tier", "pool_eviction", "salts",
                               "warm_equals_cold"]
    assert report["all_passed"], [c for c in report["checks"] if not c["passed"]]
    assert by_name["pool_eviction"]["evictions"] > 0 and by_name["host_tier"]["host_tokens"] > 0
    assert by_name["salts"]["cached_tokens"][:2] == [0, 0] and by_name["salts"]["cached_tokens"][2] > 0
    speed = report["speed"]
    for key, floor in speed["floor_ms"].items():
        ours, theirs = speed["agentcache"]["graphs"][key], speed["transformers"][key]
        assert speed["ratios"][f"{key}_over_floor"] == pytest.approx(ours / floor, abs=1e-3)
        assert speed["ratios"][f"{key}_over_transformers"] == pytest.approx(ours / theirs, abs=1e-3)
    assert speed["ratios"]["warm_turn_over_transformers"] == pytest.approx(
        speed["agentcache"]["warm_turn_s"] / speed["transformers"]["warm_turn_s"], abs=1e-3)
    # the floor's KV part: three more rows of context c read 3 x c x (2 x layers x kv_heads x head_dim x 2 bytes)
    shape, sizes = gpu_check.SHAPES[speed["model_shape"]], speed["sizes"]
    per_token = 2 * speed["layers"] * shape["num_key_value_heads"] * shape["head_dim"] * 2
    for context in sizes["contexts"]:
        rows = sizes["batches"][1] - sizes["batches"][0]
        extra = speed["floor_ms"][f"tpot_ms_{context}_b{sizes['batches'][1]}"] - \
            speed["floor_ms"][f"tpot_ms_{context}_b{sizes['batches'][0]}"]
        assert extra == pytest.approx(rows * context * per_token / speed["copy_gb_s"] / 1e6, abs=3e-4)
    assert report["device"].startswith("cpu") != torch.cuda.is_available()
