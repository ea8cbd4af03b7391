"""Helpers for the disk tier tests: run the worker process, list and check page files independently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import xxhash

ROOT = Path(__file__).resolve().parents[3]
MAGIC = b"ACKVPG1\n"


def start_worker(model: str, kv: Path, prompts: list[list[int]], *extra: str) -> subprocess.Popen:
    prompts_file = kv.parent / f"prompts-{xxhash.xxh3_64_hexdigest(json.dumps(prompts).encode())}.json"
    prompts_file.write_text(json.dumps(prompts))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.engine.kv.disk_worker", model, str(kv), str(prompts_file),
                             *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> tuple[list[dict], str]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return json.loads(out), err


def run_worker(model: str, kv: Path, prompts: list[list[int]], *extra: str) -> tuple[list[dict], str]:
    return finish(start_worker(model, kv, prompts, *extra))


def start_workers_ready(model: str, kv: Path, prompts: list[list[int]],
                        count: int) -> tuple[list[subprocess.Popen], Path]:
    """Start `count` workers and wait until each has built its engine; they send their first request together
    once the returned go file exists."""
    go = kv.parent / "go"
    ready = [kv.parent / f"ready-{i}" for i in range(count)]
    procs = [start_worker(model, kv, prompts, "--ready", str(r), "--go", str(go)) for r in ready]
    deadline = time.monotonic() + 300
    while not all(r.exists() for r in ready):
        for proc in procs:
            assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "workers not ready"
        time.sleep(0.01)
    return procs, go


def page_paths(kv: Path) -> list[Path]:
    return sorted(p for p in kv.rglob("*") if p.is_file() and p.name.endswith(".page"))


def check_page_file(path: Path) -> dict:
    """Parse a page file by the documented layout (magic, xxh3-64, header length, payload length) and verify it."""
    data = path.read_bytes()
    assert data[:8] == MAGIC
    checksum = int.from_bytes(data[8:16], "little")
    header_len = int.from_bytes(data[16:20], "little")
    payload_len = int.from_bytes(data[20:28], "little")
    body = data[28:]
    assert len(body) == header_len + payload_len
    assert xxhash.xxh3_64_intdigest(body) == checksum
    header = json.loads(body[:header_len])
    assert path.name == f"{header['hash']}.page" and path.parent.name == header["fingerprint"]
    return header


def as_tensor(values: list[float]) -> torch.Tensor:
    return torch.tensor(values)
