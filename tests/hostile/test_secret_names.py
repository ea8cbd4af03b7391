"""Secrets by name whatever their case (`.ENV`, `PROD.PEM`), the common tools' credential files, and private keys by
content in every usual armor: none is listed, read, searched, written over or put in a layer."""

import re

import pytest

from agentcache import PROMPTS_DIR
from agentcache.tools import ToolBox
from layers import build_prefix
from layers.repo import has_private_key, is_secret_name, list_files

MARKER = "TOPSECRET-names-19c2"
NAMES = [".ENV", ".Env.Production", "PROD.PEM", "Server.Key", "cert.P12", ".npmrc", ".NPMRC", ".pypirc",
         ".git-credentials", "_netrc", ".docker/config.json", ".kube/config", "deploy/.pgpass", "app.JKS",
         "vault.kdbx", "id_ED25519", "ID_RSA", "terraform.tfstate", "sub/credentials.json"]
ARMORS = ["-----BEGIN PGP PRIVATE KEY BLOCK-----", "---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----",
          "PuTTY-User-Key-File-3: ssh-ed25519", "AGE-SECRET-KEY-1QQPQQ", "-----BEGIN ENCRYPTED PRIVATE KEY-----",
          "-----begin rsa private key-----", "-----BEGIN OPENSSH PRIVATE KEY-----", "-----BEGIN DSA PRIVATE KEY-----"]
NOT_SECRETS = ["environment.py", "keys.py", "monkey.txt", "README.md", "npmrc.md", "docs/pem-format.md", "id.txt"]


@pytest.mark.parametrize("name", NAMES)
def test_credential_names_are_secrets_in_any_case(name):
    assert any(is_secret_name(part) for part in name.split("/"))


@pytest.mark.parametrize("name", NOT_SECRETS)
def test_ordinary_names_are_not(name):
    assert not any(is_secret_name(part) for part in name.split("/"))


@pytest.mark.parametrize("armor", ARMORS)
def test_every_private_key_armor_is_recognised(armor):
    assert has_private_key(f"notes\n{armor}\nAAAA\n".encode())
    public = re.sub("private|secret", "PUBLIC", armor, flags=re.IGNORECASE).replace("PuTTY-User-Key-File", "PuTTY")
    assert not has_private_key(f"notes\n{public}\n".encode())


def test_no_tool_and_no_layer_shows_a_secret(tmp_path):
    files = {name: f"token={MARKER}\n" for name in NAMES}
    files |= {f"keys/k{i}.txt": f"x\n{armor}\n{MARKER}\n" for i, armor in enumerate(ARMORS)}
    files |= {"README.md": "# r\n", "skills/k.md": f"{ARMORS[0]}\n{MARKER}\n", "AGENTS.md": "plain\n"}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    box = ToolBox(tmp_path)
    assert list_files(tmp_path) == ["AGENTS.md", "README.md", *[f"keys/k{i}.txt" for i in range(len(ARMORS))],
                                    "skills/k.md"]
    outputs = [box.run("search", {"pattern": "token|TOPSECRET"}).output, box.run("list_files", {}).output]
    for rel in files:
        outputs.append(box.run("read_file", {"path": rel}).output)
        outputs.append(box.run("search", {"pattern": ".", "path": rel}).output)
        outputs.append(box.run("edit_file", {"path": rel, "old": "token", "new": "x"}).output)
    assert not any(MARKER in out for out in outputs)
    assert all(MARKER in (tmp_path / rel).read_text() for rel, text in files.items() if MARKER in text)  # kept
    prefix = build_prefix(tmp_path, PROMPTS_DIR)
    assert not any(MARKER in block.text for block in prefix)
