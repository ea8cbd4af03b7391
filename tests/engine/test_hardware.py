"""The dtype by hardware: bfloat16 where the CPU or GPU computes it natively, float32 elsewhere; the flags come from
/proc/cpuinfo, read here independently of the code under test."""

from pathlib import Path

import pytest
import torch

from agentcache.config import DTYPES, RunConfig, check_config, config_from
from agentcache.errors import AgentcacheError
from engine.errors import EngineError
from engine.hardware import DTYPE_CHOICES, choose_dtype, cpu_flags

CPU = torch.device("cpu")


@pytest.mark.parametrize(("flags", "dtype"), [
    ({"avx2", "fma"}, torch.float32),
    ({"avx2", "avx512f"}, torch.float32),  # AVX-512 without its BF16 extension emulates bfloat16
    ({"avx512f", "avx512_bf16"}, torch.bfloat16),
    ({"amx_bf16", "amx_tile"}, torch.bfloat16),
    (set(), torch.float32),
])
def test_auto_picks_bfloat16_only_with_native_cpu_support(flags, dtype):
    choice = choose_dtype("auto", CPU, frozenset(flags))
    assert choice.dtype == dtype
    assert ("amx_bf16" in choice.reason or "avx512_bf16" in choice.reason)


@pytest.mark.parametrize("name", ["float32", "bfloat16", "float16"])
def test_a_named_dtype_is_taken_as_asked(name):
    assert choose_dtype(name, CPU, frozenset({"amx_bf16"})).dtype == getattr(torch, name)


def test_an_unknown_dtype_is_one_clear_error():
    with pytest.raises(EngineError, match="unknown dtype 'fp8' \\(known: auto, float32, bfloat16, float16\\)"):
        choose_dtype("fp8", CPU)


def test_cpu_flags_read_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 amx_bf16\nbugs\t\t: spectre\n")
    assert cpu_flags(info) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_auto_on_this_machine_matches_its_cpuinfo():
    text = Path("/proc/cpuinfo").read_text()
    native = " amx_bf16" in text or " avx512_bf16" in text
    expected = torch.bfloat16 if torch.cuda.is_available() or native else torch.float32
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        expected = torch.float16
    assert choose_dtype("auto").dtype == expected


def test_the_config_knows_the_engine_dtypes():
    assert DTYPES == DTYPE_CHOICES
    assert check_config(config_from({"dtype": "bfloat16"})).dtype == "bfloat16"
    assert RunConfig().dtype == "auto"
    with pytest.raises(AgentcacheError, match="dtype must be one of auto, float32, bfloat16, float16, got 'int3'"):
        check_config(config_from({"dtype": "int3"}))


def test_load_model_takes_a_dtype_name_and_keeps_why():
    from engine import load_model

    auto = load_model("random-tiny", dtype="auto")
    assert auto.dtype == choose_dtype("auto").dtype == next(auto.model.parameters()).dtype
    assert auto.dtype_reason == choose_dtype("auto").reason
    half = load_model("random-tiny", dtype="bfloat16")
    assert next(half.model.parameters()).dtype == torch.bfloat16 and half.dtype_reason == "asked for"
    assert half.fingerprint != load_model("random-tiny", dtype="float32").fingerprint  # pages never mix dtypes


def test_a_tokenizer_reuses_a_converted_folder_of_another_dtype(tmp_path):
    """inspect loads only a tokenizer: it must not convert a second copy of the weights for it."""
    import shutil

    from agentcache.cache_dir import models_dir
    from engine import load_model
    from engine.model import load_tokenizer

    source = load_model("smollm2-135m", dtype="float32", cache_dir=models_dir())
    converted = next(models_dir().glob("smollm2-135m-*-float32-v*"))
    shutil.copytree(converted, tmp_path / converted.name)
    tokenizer = load_tokenizer("smollm2-135m", dtype=torch.bfloat16, cache_dir=tmp_path)
    assert tokenizer.encode("def split_sentences") == source.tokenizer.encode("def split_sentences")
    assert [p.name for p in tmp_path.iterdir()] == [converted.name]  # no bfloat16 copy was made
