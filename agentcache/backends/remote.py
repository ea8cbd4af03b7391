"""What the HTTP backends share: retries with backoff, one-line errors, and reply checking without a model."""

from __future__ import annotations

import time
from typing import Any

from agentcache.backends.constrain import ToolCallGrammar, text_ll_tokenizer
from agentcache.errors import AgentcacheError
from layers import Context, ToolSpec

RETRIES = 4
BACKOFF_S = 0.5


class ServerModel:
    """The parts of the backend protocol a backend that sends requests to a server knows (by its `model` name) and
    does not (the weights, the tokenizer, the prompt's layout)."""

    model: str
    layout = None  # the server lays the messages out

    @property
    def model_name(self) -> str:
        return self.model

    @property
    def fingerprint(self) -> None:
        return None  # the server's weights are not known here

    def segment_counts(self, context: Context) -> None:
        return None  # the server's tokenizer is not at hand


class RemoteError(AgentcacheError):
    """The server is unreachable, rejected the key, or refused the request (status 0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def call_with_retries(sdk: Any, base_url: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs) through an official SDK (openai or anthropic), retrying 429 and 5xx with backoff.

    A timeout is not retried: the server took the request and may still be working on it.
    """
    for attempt in range(RETRIES + 1):
        try:
            return fn(*args, **kwargs)
        except sdk.APITimeoutError:  # a subclass of APIConnectionError: it must come first
            raise RemoteError(f"{base_url} timed out: no answer within the backend's timeout "
                              "(is the server overloaded, or the timeout too short?)") from None
        except sdk.APIConnectionError:
            raise RemoteError(f"cannot connect to {base_url} (is the server running?)") from None
        except (ValueError, RecursionError) as exc:  # a body the SDK cannot parse: 5,000 digits, nesting too deep
            raise RemoteError(f"{base_url} sent a response that is not usable JSON ({type(exc).__name__})") from None
        except sdk.APIStatusError as exc:
            status = exc.status_code
            if status == 401:
                raise RemoteError(f"{base_url} rejected the API key (401): {status_message(exc)}; "
                                  "pass --api-key", 401) from None
            if status != 429 and status < 500:
                raise RemoteError(f"{base_url} answered {status}: {status_message(exc)}", status) from None
            if attempt == RETRIES:
                raise RemoteError(f"{base_url} kept failing ({status}) after {RETRIES} retries: "
                                  f"{status_message(exc)}", status) from None
            time.sleep(BACKOFF_S * 2 ** attempt)
    raise AssertionError("unreachable")


def status_message(exc: Any) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body)
    message = error.get("message") if isinstance(error, dict) else None
    return " ".join(str(message or exc.message).split())


class ReplyChecker:
    """Parses a remote model's reply with the same tool grammar the local backend decodes with."""

    def __init__(self) -> None:
        self._grammars: dict[tuple[str, ...], ToolCallGrammar] = {}

    def parse(self, text: str, tools: list[ToolSpec], enabled: set[str]) -> Any:
        key = tuple(sorted(enabled))
        if key not in self._grammars:
            chosen = [t for t in tools if t.name in enabled]
            self._grammars[key] = ToolCallGrammar(text_ll_tokenizer(), chosen, allow_answer=True)
        return self._grammars[key].parse(text)
