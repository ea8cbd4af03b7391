"""`agentcache serve`'s limits, against a real server process (`python -m agentcache.cli serve`, random-weight model
with the real tokenizer) over real HTTP on loopback: a tenant's contexts are its own, a body or message list past its
limit gets 413 before the work, rendering is linear in the number of messages, slow clients are dropped while others
are served, SIGTERM stops a busy server within seconds, and numbers JSON cannot hold get 400, never a 5xx."""

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from agentcache.cache_dir import models_dir
from agentcache.render import ChatRenderer
from agentcache.serve.app import IDLE_TIMEOUT_S, MAX_BODY_BYTES, REQUEST_TIMEOUT_S, SHUTDOWN_GRACE_S
from agentcache.serve.chat import MAX_MESSAGES, MAX_STOP_CHARS, MAX_STOPS, MAX_TOOLS
from agentcache.serve.contexts import MAX_CONTEXTS
from agentcache.serve.segments import message_segments
from engine.model import load_tokenizer
from tests.agentcache.http_helpers import free_port, http

MODEL = "random-tiny-chat"
WINDOW_TOKENS = 8192  # the random model's max_position_embeddings
PAGE = 16
ROOT = Path(__file__).resolve().parents[2]
LONG = "The quick brown fox jumps over the lazy dog. " * 30
RENDER_BOUND_S = 10  # generous: the quadratic renderer took 5 s for 1,000 messages and 56 s for 4,000
LATE_S = 10  # how late past its deadline a drop or an exit may come on a loaded machine
TRACEBACK = "Traceback"


class Server:
    """`agentcache serve` as a child process on a free loopback port, its stderr in a file."""

    def __init__(self, log: Path) -> None:
        self.port, self.log = free_port(), log
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        with log.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "agentcache.cli", "serve", "--model", MODEL,
                                          "--port", str(self.port)], env=env, stdout=subprocess.DEVNULL, stderr=err)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 300
        while not healthy(self.url):
            assert self.proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.1)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port))

    def stderr(self) -> str:
        return self.log.read_text()

    def terminate_within(self, seconds: float) -> float:
        """SIGTERM; the seconds until the process is gone (fails past `seconds`)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"the server was still running {seconds} s after SIGTERM")
        return time.monotonic() - started


def healthy(url: str) -> bool:
    try:
        return http("GET", url + "/health")[0] == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module; at the end, SIGTERM on it idle is an exit within seconds too."""
    running = Server(tmp_path_factory.mktemp("serve") / "stderr.txt")
    yield running
    if running.proc.poll() is None:
        running.terminate_within(SHUTDOWN_GRACE_S + LATE_S)
    assert TRACEBACK not in running.stderr()


def errors(url: str) -> dict[str, int]:
    text = http("GET", url + "/metrics")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r'^agentcache_request_errors_total\{status="(\d+)"\} (\d+)$', text,
                                                 re.M)}


def chat_body(**fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **fields}


def one_error(url: str, method: str, path: str, status: int, body=None, raw: bytes | None = None,
              headers: dict | None = None) -> str:
    """The request gets `status` with one OpenAI-style error line, counted once in the error metric; its message."""
    before = errors(url).get(str(status), 0)
    got, answer = http(method, url + path, body, raw, headers)
    assert got == status, (got, answer)
    message = answer["error"]["message"]
    assert isinstance(message, str) and "\n" not in message and TRACEBACK not in message
    assert errors(url).get(str(status), 0) == before + 1
    return message


# --- tenants: a context is found only with the cache_salt that created it ---

def test_another_tenant_gets_404_reading_deleting_or_using_a_context(server):
    url = server.url
    shared = [{"role": "system", "content": f"{uuid.uuid4()} {LONG}"}]
    status, created = http("POST", url + "/v1/contexts", {"messages": shared, "cache_salt": "tenant-a"})
    assert status == 200 and created["tokens"] > 4 * PAGE
    context_id, unknown = created["context_id"], "ctx_" + "0" * 24
    unknown_message = one_error(url, "GET", f"/v1/contexts/{unknown}", 404, headers={"X-Cache-Salt": "tenant-a"})
    not_found = unknown_message.replace(unknown, context_id)  # the same words as for an id that never existed
    others = [{}, {"X-Cache-Salt": "tenant-b"}, {"X-Cache-Salt": "tenant-"}, {"X-Cache-Salt": "TENANT-A"}]
    for headers in others:
        assert one_error(url, "GET", f"/v1/contexts/{context_id}", 404, headers=headers) == not_found
        assert one_error(url, "DELETE", f"/v1/contexts/{context_id}", 404, headers=headers) == not_found
    new = [{"role": "user", "content": "And now?"}]
    for salt in (None, "tenant-b", "tenant-a2"):
        fields = {"cache_salt": salt} if salt else {}
        assert one_error(url, "POST", "/v1/chat/completions", 404,
                         chat_body(messages=new, context_id=context_id, **fields)) == not_found
    # the owner still has it, and its cached pages
    status, seen = http("GET", url + f"/v1/contexts/{context_id}", headers={"X-Cache-Salt": "tenant-a"})
    assert status == 200 and seen == created
    status, answer = http("POST", url + "/v1/chat/completions",
                          chat_body(messages=new, context_id=context_id, cache_salt="tenant-a"))
    assert status == 200 and answer["usage"]["context_tokens"] == created["tokens"]
    assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] >= created["tokens"] // PAGE * PAGE
    # sending the same messages itself, another tenant shares none of them
    for salt in (None, "tenant-b"):
        fields = {"cache_salt": salt} if salt else {}
        status, answer = http("POST", url + "/v1/chat/completions", chat_body(messages=shared + new, **fields))
        assert status == 200 and answer["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert http("DELETE", url + f"/v1/contexts/{context_id}", headers={"X-Cache-Salt": "tenant-a"})[0] == 200
    one_error(url, "GET", f"/v1/contexts/{context_id}", 404, headers={"X-Cache-Salt": "tenant-a"})


def test_an_unsalted_context_is_not_a_salted_tenants_and_a_flood_evicts_only_the_flooder(server):
    url = server.url
    message = [{"role": "system", "content": f"{uuid.uuid4()} shared notes"}]
    status, unsalted = http("POST", url + "/v1/contexts", {"messages": message})
    assert status == 200
    status, owned = http("POST", url + "/v1/contexts", {"messages": message, "cache_salt": "owner"})
    assert status == 200
    one_error(url, "GET", f"/v1/contexts/{unsalted['context_id']}", 404, headers={"X-Cache-Salt": "owner"})
    one_error(url, "POST", "/v1/chat/completions", 404,
              chat_body(context_id=unsalted["context_id"], cache_salt="owner"))
    one_error(url, "GET", f"/v1/contexts/{owned['context_id']}", 404)
    assert http("POST", url + "/v1/chat/completions", chat_body(context_id=unsalted["context_id"]))[0] == 200
    one_error(url, "GET", "/v1/contexts/x", 400, headers={"X-Cache-Salt": ""})
    for salt in ("owner ", "\towner", "own\x01er"):  # no header could name it
        assert "cannot start or end with a space" in one_error(url, "POST", "/v1/contexts", 400,
                                                                {"messages": message, "cache_salt": salt})

    flood = []
    for i in range(MAX_CONTEXTS + 5):
        status, created = http("POST", url + "/v1/contexts",
                               {"messages": [{"role": "user", "content": f"flood {i}"}], "cache_salt": "flooder"})
        assert status == 200
        flood.append(created["context_id"])
    assert http("GET", url + f"/v1/contexts/{unsalted['context_id']}")[0] == 200
    assert http("GET", url + f"/v1/contexts/{owned['context_id']}", headers={"X-Cache-Salt": "owner"})[0] == 200
    assert http("GET", url + f"/v1/contexts/{flood[0]}", headers={"X-Cache-Salt": "flooder"})[0] == 404
    assert http("GET", url + f"/v1/contexts/{flood[-1]}", headers={"X-Cache-Salt": "flooder"})[0] == 200


# --- sizes: 413 before the work ---

def read_response(conn: socket.socket) -> tuple[int, dict, bytes]:
    """(status, JSON body, the raw response) once the server has closed the connection."""
    conn.settimeout(60)
    raw = b""
    while chunk := conn.recv(65536):
        raw += chunk
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload), raw


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/contexts"])
@pytest.mark.parametrize("length", [MAX_BODY_BYTES + 1, 10**15])
def test_an_oversize_content_length_gets_413_without_the_body_being_sent(server, path, length):
    """Only the headers are sent: the answer cannot have waited for the body, and the server closes the connection
    rather than read the rest."""
    before = errors(server.url).get("413", 0)
    with server.connect() as conn:
        conn.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                     % (path.encode(), length))
        status, answer, _ = read_response(conn)
    assert status == 413 and answer["error"]["message"] == (f"the body has {length} bytes; the limit is "
                                                            f"{MAX_BODY_BYTES} bytes")
    assert errors(server.url).get("413", 0) == before + 1


def test_a_chunked_body_gets_413_as_soon_as_it_passes_the_limit(server):
    """No Content-Length: the server counts what arrives. The chunk is declared bigger than what is sent, so the 413
    comes from the count, not from the end of the body."""
    with server.connect() as conn:
        conn.sendall(b"POST /v1/contexts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % (2 * MAX_BODY_BYTES))
        conn.sendall(b" " * (MAX_BODY_BYTES + 1))
        status, answer, _ = read_response(conn)
    assert status == 413 and answer["error"]["message"] == (f"the body has over {MAX_BODY_BYTES} bytes; the limit "
                                                            f"is {MAX_BODY_BYTES} bytes")


def test_a_body_just_under_the_limit_is_read_and_judged(server):
    content = "word " * ((MAX_BODY_BYTES - 200) // 5)
    raw = json.dumps(chat_body(messages=[{"role": "user", "content": content}])).encode()
    assert len(raw) <= MAX_BODY_BYTES
    assert "the model window is 8192" in one_error(server.url, "POST", "/v1/chat/completions", 400, raw=raw)


def tiny_messages(count: int, system: int = 0) -> list[dict]:
    roles = ["user", "assistant", "user", "tool", "assistant"]
    return ([{"role": "system", "content": f"s{i}"} for i in range(system)]
            + [{"role": roles[i % len(roles)], "content": "a"} for i in range(count - system)])


@pytest.mark.parametrize(("path", "count"), [("/v1/chat/completions", MAX_MESSAGES + 1), ("/v1/contexts", 40_000)])
def test_too_many_messages_get_413(server, path, count):
    body = chat_body(messages=tiny_messages(count)) if path.endswith("completions") else {
        "messages": tiny_messages(count)}
    message = one_error(server.url, "POST", path, 413, body)
    assert message == f"'messages' holds {count} messages; the limit is {MAX_MESSAGES}"


# --- rendering: linear in the number of messages ---

@pytest.mark.parametrize(("path", "count", "system"), [("/v1/chat/completions", 20_000, 0),
                                                       ("/v1/contexts", MAX_MESSAGES, 5_000)])
def test_many_tiny_messages_under_the_limit_are_rendered_in_bounded_time(server, path, count, system):
    """Rendered and tokenized whole (the token count in the answer covers every message), then refused for the
    window: in seconds, where the quadratic renderer took minutes."""
    messages = tiny_messages(count, system)
    body = chat_body(messages=messages) if path.endswith("completions") else {"messages": messages}
    started = time.monotonic()
    message = one_error(server.url, "POST", path, 400, body)
    elapsed = time.monotonic() - started
    tokens = int(re.search(r"has (\d+) tokens; the model window is 8192", message)[1])
    assert tokens >= 5 * (count - system)  # each ChatML message is at least 5 tokens
    assert elapsed < RENDER_BOUND_S, elapsed


class CountingTokenizer:
    """The real tokenizer, counting the messages its chat template renders."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.rendered = tokenizer, 0

    def __getattr__(self, name: str):
        return getattr(self.tokenizer, name)

    def apply_chat_template(self, messages, **kwargs):
        self.rendered += len(messages)
        return self.tokenizer.apply_chat_template(messages, **kwargs)


@pytest.fixture(scope="module")
def tokenizer():
    found = load_tokenizer(MODEL, cache_dir=models_dir())
    if found is None:
        pytest.fail(f"the tokenizer of {MODEL} is not installed; run: make test (or agentcache models install)")
    return found


def template_work(tokenizer, segment, messages: list[dict]) -> int:
    counting = CountingTokenizer(tokenizer)
    renderer = ChatRenderer(counting)
    counting.rendered = 0  # the renderer's own probes at construction
    segment(renderer, messages)
    return counting.rendered


def test_rendering_work_grows_linearly_with_the_number_of_messages(tokenizer):
    linear = [template_work(tokenizer, message_segments, tiny_messages(n, 50)) for n in (1_000, 4_000)]
    assert 3.5 < linear[1] / linear[0] < 4.5, linear
    # the counter sees quadratic growth where there is some: the shared renderer on the whole list
    whole = [template_work(tokenizer, ChatRenderer.message_segments, tiny_messages(n)) for n in (100, 400)]
    assert whole[1] / whole[0] > 12, whole


def test_linear_rendering_gives_the_shared_renderers_segments(tokenizer):
    """Random conversations (leading system runs, system messages later, every role, empty contents, across window
    edges): the same strings as the shared renderer on the whole list."""
    rng = random.Random(30)
    renderer, reference = ChatRenderer(tokenizer), ChatRenderer(tokenizer)
    for _ in range(150):
        lead = [{"role": "system", "content": rng.choice(["s", "two words", "", "a\nb"])}
                for _ in range(rng.randint(0, 12))]
        rest = [{"role": rng.choice(["system", "user", "assistant", "tool"]),
                 "content": rng.choice(["x", "y z", "", "line\n", '{"name": "f"}'])} for _ in range(rng.randint(0, 40))]
        messages = lead + rest
        if messages:
            assert message_segments(renderer, messages) == reference.message_segments(messages), messages


def test_without_a_template_rendering_is_chatml_per_message():
    messages = tiny_messages(30, 3)
    assert message_segments(ChatRenderer(None), messages) == ChatRenderer(None).message_segments(messages)


# --- slow clients ---

def dropped_after(conn: socket.socket, trickle: bytes = b"") -> float:
    """Seconds until the server closes the connection; meanwhile one byte of `trickle` a second, if given."""
    started = time.monotonic()
    conn.settimeout(1.0)
    sent = 0
    while time.monotonic() - started < REQUEST_TIMEOUT_S + 3 * LATE_S:
        try:
            if conn.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            if sent < len(trickle):
                try:
                    conn.sendall(trickle[sent:sent + 1])
                except OSError:
                    return time.monotonic() - started
                sent += 1
        except OSError:  # reset
            return time.monotonic() - started
    return float("inf")


def test_slow_clients_are_dropped_after_their_timeouts_while_another_is_served(server):
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    openings = {
        "silent": b"",
        "half a request line": b"POST /v1/chat/comp",
        "headers, then nothing": head,
        "half the body": head + b"Content-Length: 200\r\n\r\n" + b'{"model": "random-tiny-chat", ',
    }
    trickle = head + b"X-Padding: " + b"a" * 200  # one byte a second: never idle, never done
    gone_before = errors(server.url).get("499", 0)
    results: dict[str, float] = {}

    def watch(name: str, opening: bytes, trickled: bytes = b"") -> None:
        with server.connect() as conn:
            conn.sendall(opening)
            results[name] = dropped_after(conn, trickled)

    threads = [threading.Thread(target=watch, args=(name, opening)) for name, opening in openings.items()]
    threads.append(threading.Thread(target=watch, args=("trickle", b"", trickle)))
    for thread in threads:
        thread.start()
    for _ in range(3):  # served meanwhile, before and after the idle ones are dropped
        status, answer = http("POST", server.url + "/v1/chat/completions", chat_body())
        assert status == 200 and answer["usage"]["completion_tokens"] >= 1
        time.sleep(IDLE_TIMEOUT_S / 2)
    for thread in threads:
        thread.join()
    for name in openings:
        assert IDLE_TIMEOUT_S - 0.5 < results[name] < IDLE_TIMEOUT_S + LATE_S, (name, results)
    assert REQUEST_TIMEOUT_S - 0.5 < results["trickle"] < REQUEST_TIMEOUT_S + LATE_S, results
    assert errors(server.url).get("499", 0) == gone_before + 1  # the request whose body stalled
    assert http("POST", server.url + "/v1/chat/completions", chat_body())[0] == 200


# --- SIGTERM ---

def test_sigterm_stops_a_busy_server_within_seconds_and_answers_what_was_running(tmp_path):
    busy = Server(tmp_path / "stderr.txt")
    long = chat_body(max_tokens=7000, temperature=0)
    post = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n")
    stream_raw, plain_raw = json.dumps({**long, "stream": True}).encode(), json.dumps(long).encode()
    stream, plain, silent, half = (busy.connect() for _ in range(4))
    stream.sendall(post % len(stream_raw) + stream_raw)
    plain.sendall(post % len(plain_raw) + plain_raw)
    silent.sendall(b"POST /v1/chat")
    half.sendall(post % 500 + b'{"model": ')
    received = b""
    stream.settimeout(120)
    while received.count(b"data: ") < 4:  # the stream is generating
        chunk = stream.recv(65536)
        assert chunk, received
        received += chunk
    took = busy.terminate_within(SHUTDOWN_GRACE_S + LATE_S)
    assert took < SHUTDOWN_GRACE_S + LATE_S
    status, answer, _ = read_response(plain)
    assert status == 503 and "the server is shutting down" in answer["error"]["message"]
    while chunk := stream.recv(65536):
        received += chunk
    assert b"the server is shutting down" in received.rsplit(b"data: ", 1)[1]
    assert TRACEBACK not in busy.stderr()
    for conn in (stream, plain, silent, half):
        conn.close()


# --- numbers JSON cannot hold, and field limits ---

BIG = "1" + "0" * 400
SCHEMA = '{"type": "object", "properties": {"n": {"type": "integer", "maximum": %s}}}'
NUMBER_CASES = [
    ("/v1/chat/completions", '"temperature": NaN', "NaN is not a JSON number"),
    ("/v1/chat/completions", '"user": NaN', "NaN is not a JSON number"),
    ("/v1/chat/completions", '"top_p": -Infinity', "-Infinity is not a JSON number"),
    ("/v1/chat/completions", '"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": '
     + SCHEMA % "Infinity" + "}}", "Infinity is not a JSON number"),
    ("/v1/chat/completions", '"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": '
     + SCHEMA % "1e400" + "}}", "1e400 is beyond a 64-bit float's range"),
    ("/v1/chat/completions", '"tools": [{"type": "function", "function": {"name": "f", "parameters": '
     + SCHEMA % "-2.5e308" + '}}], "tool_choice": "required"', "-2.5e308 is beyond"),
    ("/v1/chat/completions", '"tools": [{"type": "function", "function": {"name": "f", "parameters": '
     + SCHEMA % "NaN" + "}}]", "NaN is not a JSON number"),
    ("/v1/chat/completions", f'"max_tokens": {BIG}', "exceeds the model window"),
    ("/v1/chat/completions", f'"seed": {BIG}', "seed must be an integer in"),
    ("/v1/chat/completions", f'"n": -{BIG}', "n must be 1"),
    ("/v1/chat/completions", f'"temperature": {BIG}', "temperature must be a number in [0, 2]"),
    ("/v1/chat/completions", f'"top_p": 1e-400', "top_p must be a number in (0, 1]"),  # underflows to 0.0
    ("/v1/chat/completions", '"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": '
     + SCHEMA % BIG + "}}", "JSON schema"),
    ("/v1/chat/completions", '"max_tokens": ' + "9" * 5000, "the body is not valid JSON"),
    ("/v1/contexts", '"ttl_seconds": NaN', "NaN is not a JSON number"),
    ("/v1/contexts", '"ttl_seconds": 1e309', "1e309 is beyond"),
    ("/v1/contexts", f'"ttl_seconds": {BIG}', "ttl_seconds must be a number in (0, 86400]"),
]


@pytest.mark.parametrize(("path", "field", "message"), NUMBER_CASES,
                         ids=[f"{i}-{case[2][:30]}" for i, case in enumerate(NUMBER_CASES)])
def test_numbers_json_cannot_hold_get_400_not_500(server, path, field, message):
    base = json.dumps(chat_body() if path.endswith("completions") else {"messages": [{"role": "user",
                                                                                       "content": "hi"}]})
    raw = (base[:-1] + ", " + field + "}").encode()
    assert message in one_error(server.url, "POST", path, 400, raw=raw)
    assert healthy(server.url)


LIMIT_CASES = [
    ({"stop": ["s"] * (MAX_STOPS + 1)}, f"stop holds at most {MAX_STOPS} strings"),
    ({"stop": "x" * (MAX_STOP_CHARS + 1)}, f"of at most {MAX_STOP_CHARS} characters"),
    ({"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(MAX_TOOLS + 1)]},
     f"'tools' holds {MAX_TOOLS + 1} tools; the limit is {MAX_TOOLS}"),
]


@pytest.mark.parametrize(("fields", "message"), LIMIT_CASES, ids=["stops", "stop length", "tools"])
def test_fields_past_their_limits_get_400(server, fields, message):
    assert message in one_error(server.url, "POST", "/v1/chat/completions", 400, chat_body(**fields))
    limit = {key: value[:-1] for key, value in fields.items()}  # at the limit: accepted
    assert http("POST", server.url + "/v1/chat/completions", chat_body(**limit))[0] == 200
