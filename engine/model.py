"""Model loading: the registry's GGUF models by short name (engine/registry.py), local HF directories, hub ids and
a tiny random model."""

from __future__ import annotations

import functools
import inspect
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import xxhash
from safetensors.torch import save_file

from engine import registry
from engine.decode_step import reproduces
from engine.errors import EngineError, ModelNotInstalledError, UnknownModelError
from engine.gguf import attention
from engine.hardware import choose_dtype, default_device
from engine.quant import quantize
from engine.registry import ModelEntry

TOKENIZER_MODEL = "smollm2-135m"  # whose tokenizer 'random-tiny-chat' borrows
RANDOM_NAME = "random-tiny"
RANDOM_CHAT_NAME = "random-tiny-chat"
CONVERSION_VERSION = "1"


@dataclass(slots=True)
class LoadedModel:
    name: str
    model: Any
    tokenizer: Any | None
    fingerprint: str
    device: torch.device
    dtype: torch.dtype
    dtype_reason: str = "asked for"  # why this dtype (engine.hardware.choose_dtype)
    quant: str = "none"  # weight-only quantization (engine.quant)
    quant_reason: str = "unquantized weights"  # which kernel runs it here

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def kv_heads(self) -> int:
        return getattr(self.config, "num_key_value_heads", None) or self.config.num_attention_heads

    @property
    def head_dim(self) -> int:
        return getattr(self.config, "head_dim", None) or self.config.hidden_size // self.config.num_attention_heads

    @property
    def max_len(self) -> int:
        return self.config.max_position_embeddings

    @property
    def eos_token_ids(self) -> set[int]:
        eos = self.config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids


def with_cache(model: Any, cache: Any) -> dict[str, Any]:
    """The keyword argument that hands `cache` to `model`'s forward: `cache` from transformers 5.24 on,
    `past_key_values` before (5.24 still takes the old name, with a FutureWarning on every call)."""
    return {_cache_keyword(type(model)): cache}


@functools.cache
def _cache_keyword(model_class: type) -> str:
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def output_cache(output: Any) -> Any:
    """The KV cache a forward returned, under either name."""
    return output.cache if hasattr(output, "cache") else output.past_key_values


def load_model(spec: str | None = None, device: str | None = None, dtype: torch.dtype | str = torch.float32,
               cache_dir: Path | None = None, quant: str = "none") -> LoadedModel:
    """Load a model by name: a registry model ('default' when None), 'random-tiny', a local HF directory or a hub
    id. `dtype`: a torch dtype, or a name ('auto': the fastest for the device, engine.hardware). `cache_dir`: where
    registry models are assembled and kept once converted (needed by them and by 'random-tiny-chat', which uses
    SmolLM2's tokenizer). `quant`: none, int8 or int4 weights (engine.quant); a registry model keeps its int8
    weights beside its converted ones."""
    spec = spec or "default"
    dev = torch.device(device) if device else default_device()
    dtype_reason = "asked for"
    if isinstance(dtype, str):
        dtype_choice = choose_dtype(dtype, dev)
        dtype, dtype_reason = dtype_choice.dtype, dtype_choice.reason
    entry = registry.find(spec)
    if entry is not None:
        model, tokenizer, weights_digest = _load_registry(entry, dtype, cache_dir)
        name = entry.name
    elif spec == RANDOM_NAME:
        model, tokenizer, name = random_tiny_model(dtype), None, RANDOM_NAME
        weights_digest = weights_digest_of(model)
    elif spec == RANDOM_CHAT_NAME:
        tokenizer = _registry_tokenizer(registry.find(TOKENIZER_MODEL), dtype, cache_dir)
        model, name = random_tiny_model(dtype, vocab_size=len(tokenizer)), RANDOM_CHAT_NAME
        weights_digest = weights_digest_of(model)
    elif Path(spec).expanduser().is_dir():
        model, tokenizer = _load_pretrained(str(Path(spec).expanduser()), dtype)
        weights_digest, name = weights_digest_of(model), spec
    else:
        model, tokenizer = _load_hub(spec, dtype)
        weights_digest, name = weights_digest_of(model), spec
    model = model.to(dev).eval()
    store = _quant_dir(_converted_dir(entry, dtype, cache_dir)) if entry is not None and quant != "none" else None
    gguf = (lambda: registry.gguf_path(entry, cache_dir)) if entry is not None else None
    choice = quantize(model, quant, dev, dtype, store, gguf)
    reason = choice.reason
    if choice.kernels is not None and reproduces(model.config):  # decode runs the lean step: no padded rows reach
        attention.use(model, choice.kernels)  # transformers' attention, so prefill's may run on the same kernels
        reason += ", C++ attention"
    fingerprint = model_fingerprint(weights_digest, dtype, tokenizer, choice.scheme)
    return LoadedModel(name, model, tokenizer, fingerprint, dev, dtype, dtype_reason, choice.scheme, reason)


def load_tokenizer(spec: str | None = None, dtype: torch.dtype = torch.float32,
                   cache_dir: Path | None = None) -> Any | None:
    """Only the tokenizer of a model (no weights): None for 'random-tiny' or when it cannot be found here.
    `cache_dir` as for load_model."""
    from transformers import AutoTokenizer

    spec = spec or "default"
    entry = registry.find(TOKENIZER_MODEL if spec == RANDOM_CHAT_NAME else spec)
    try:
        if entry is not None:
            return _registry_tokenizer(entry, dtype, cache_dir)
        if spec != RANDOM_NAME and Path(spec).expanduser().is_dir():
            return AutoTokenizer.from_pretrained(str(Path(spec).expanduser()))
    except (OSError, ValueError, ModelNotInstalledError):
        return None
    return None


def random_tiny_model(dtype: torch.dtype = torch.float32, seed: int = 0, vocab_size: int = 512) -> Any:
    """A deterministic random-weight Llama small enough for fast engine tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,  # room for agent prompts
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.to(dtype)


def weights_digest_of(model: Any) -> str:
    h = xxhash.xxh3_128()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_fingerprint(weights_digest: str, dtype: torch.dtype, tokenizer: Any | None, quant: str = "none") -> str:
    """Digest of weights, dtype, quantization, tokenizer and chat template: it roots every KV page hash."""
    tokenizer_digest = chat_template_digest = "none"
    if tokenizer is not None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        vocab = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
        tokenizer_digest = xxhash.xxh3_128_hexdigest(vocab.encode())
        chat_template_digest = xxhash.xxh3_128_hexdigest((tokenizer.chat_template or "").encode())
    parts = [weights_digest, str(dtype), tokenizer_digest, chat_template_digest] + ([quant] if quant != "none" else [])
    return xxhash.xxh3_128_hexdigest("\n".join(parts).encode())


def converted_model_dir(name: str, dtype: torch.dtype, cache_dir: Path) -> Path:
    """A registry model's converted HF folder for `dtype` (converted now if it is not there yet): what other
    engines (vLLM) load unchanged."""
    entry = registry.find(name)
    if entry is None:
        raise _unknown(name, "it is not a registry model")
    return _converted_dir(entry, dtype, cache_dir)


def _quant_dir(converted: Path) -> Path:
    """Where a converted model's quantized weights are kept: beside its folder, never in it (vLLM loads every
    safetensors file of a model folder)."""
    store = converted.with_name(converted.name + ".quant")
    store.mkdir(exist_ok=True)
    return store


def _converted_stem(entry: ModelEntry) -> str:
    return f"{entry.name}-{entry.sha256[:16]}"


def _converted_dir(entry: ModelEntry, dtype: torch.dtype, cache_dir: Path | None) -> Path:
    """A registry model as safetensors under cache_dir, converted from its verified GGUF on first use (its packages
    must still be installed: `agentcache models` and loading agree on what is there)."""
    if not entry.installed():
        raise ModelNotInstalledError(f"model '{entry.name}' is not installed; run: {entry.install}")
    if cache_dir is None:
        raise EngineError(f"model '{entry.name}' needs a cache_dir to keep its converted weights in")
    key = f"{_converted_stem(entry)}-{str(dtype).removeprefix('torch.')}-v{CONVERSION_VERSION}"
    converted = cache_dir / key
    if not (converted / "agentcache.json").is_file():
        _convert_gguf(registry.gguf_path(entry, cache_dir), converted, dtype)
    for name in ("int8.safetensors", "int8.sha256"):  # where an earlier version kept the int8 weights
        if (converted / name).is_file():
            (converted / name).replace(_quant_dir(converted) / name)
    return converted


def _registry_tokenizer(entry: ModelEntry, dtype: torch.dtype, cache_dir: Path | None) -> Any:
    """The tokenizer of any dtype's converted folder already there (it is the same in all), else of `dtype`'s."""
    from transformers import AutoTokenizer

    pattern = f"{_converted_stem(entry)}-*-v{CONVERSION_VERSION}/agentcache.json"
    done = sorted(cache_dir.glob(pattern)) if cache_dir else []
    folder = done[0].parent if done and entry.installed() else _converted_dir(entry, dtype, cache_dir)
    return AutoTokenizer.from_pretrained(str(folder))


def _load_registry(entry: ModelEntry, dtype: torch.dtype, cache_dir: Path | None) -> tuple[Any, Any, str]:
    converted = _converted_dir(entry, dtype, cache_dir)
    model, tokenizer = _load_pretrained(str(converted), dtype)
    meta = json.loads((converted / "agentcache.json").read_text())
    return model, tokenizer, meta["weights_digest"]


def _convert_gguf(gguf: Path, out: Path, dtype: torch.dtype) -> None:
    """Dequantize the GGUF once (transformers shows a progress bar) and keep it as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(tmp)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(tmp)
    (tmp / "agentcache.json").write_text(json.dumps({"weights_digest": weights_digest_of(model), "source": gguf.name}))
    try:
        tmp.rename(out)
    except OSError:
        if not (out / "agentcache.json").is_file():
            raise


def _load_pretrained(path: str, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    return model, tokenizer


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_hub(spec: str, dtype: torch.dtype) -> tuple[Any, Any]:
    if not _hub_reachable():
        raise _unknown(spec, "the model hub cannot be reached from here")
    try:
        return _load_pretrained(spec, dtype)
    except Exception as exc:  # transformers raises many types for a missing repo or no network
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _unknown(spec, f"the hub could not provide it ({reason[:160]})") from exc


def _unknown(spec: str, why: str) -> UnknownModelError:
    known = ", ".join(f"'{n}'" for n in [m.name for m in registry.MODELS] + [RANDOM_NAME, RANDOM_CHAT_NAME])
    return UnknownModelError(f"unknown model '{spec}': not one of {known} (see `agentcache models`) or a local "
                             f"directory, and {why}")
