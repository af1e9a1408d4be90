"""Bounds and hygiene for the Hub requests of a push: a timeout per request, a deadline for the whole push, and no
credential in any log record emitted while it runs."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_SECRETS = (re.compile(r"(?<=://)[^/@\s]+@"), re.compile(r"\bhf_[A-Za-z0-9]{6,}"))


class PushDeadlineError(TimeoutError):
    """The whole push took longer than its ``deadline``."""


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` without credentials: user:password in URLs, Hub tokens and each of ``secrets`` are masked.

    Example:

    ```python
    >>> from hf_plasticity.integrations.hub_http import redact
    >>> redact("https://me:secret@hub.example/api token hf_abcdefghijkl")
    'https://***@hub.example/api token hf_***'
    ```
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _SECRETS[1].sub("hf_***", _SECRETS[0].sub("***@", text))


def secrets_of(token: str | None, endpoint: str) -> tuple[str, ...]:
    """The credentials a push may use: the token given or saved (``HF_TOKEN``, the login) and the user:password of
    the endpoint's URL, with their URL-quoted forms."""
    from urllib.parse import quote, unquote, urlsplit

    from huggingface_hub import get_token

    found = {token, get_token() if token is None else None, urlsplit(endpoint).password}
    found |= {quote(s, safe="") for s in found if s} | {unquote(s) for s in found if s}
    return tuple(sorted((s for s in found if isinstance(s, str) and len(s) >= 4), key=len, reverse=True))


@contextlib.contextmanager
def redacted_logs(secrets: tuple[str, ...]) -> Iterator[None]:
    """Inside the block, every log record (any logger, any thread: huggingface_hub's, its HTTP client's, ours) is
    created with its message already redacted, so no handler or filter ever sees a credential."""
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format: leave it to logging's own error handling
            return record
        clean = redact(message, secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


def _deadline_stream(stream: Any, deadline: float) -> Any:
    """``stream`` (a response body) giving up at its next chunk once the deadline has passed: a server may send one
    byte at a time, which no per-read timeout stops."""
    import httpx2  # the HTTP client huggingface_hub uses (an httpx fork)

    class DeadlineStream(httpx2.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for chunk in stream:
                _check(deadline)
                yield chunk

        def close(self) -> None:
            stream.close()

    return DeadlineStream()


def _check(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (a `time.monotonic` value), raising once it has passed."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise PushDeadlineError("the push ran past its deadline")
    return left


@contextlib.contextmanager
def bounded_requests(timeout: float, deadline: float | None = None) -> Iterator[None]:
    """Inside the block, every request that this thread sends through huggingface_hub's shared HTTP client gives up
    after ``timeout`` seconds without progress (connecting, sending or receiving), and, when ``deadline`` (a
    `time.monotonic` value) is given, no request starts or goes on reading after it. huggingface_hub itself sets no
    timeout on uploads, so a server that accepts the connection and never answers would block a push forever."""
    from huggingface_hub import get_session

    thread = threading.get_ident()

    def limit(request: Any) -> None:
        if threading.get_ident() != thread:  # another thread's request: not ours to bound
            return
        left = _check(deadline)
        each = timeout if left is None else min(timeout, left)
        request.extensions["timeout"] = {"connect": each, "read": each, "write": each, "pool": each}

    def stream(response: Any) -> None:
        if deadline is not None and threading.get_ident() == thread:
            response.stream = _deadline_stream(response.stream, deadline)

    hooks = get_session().event_hooks
    hooks["request"].append(limit)
    hooks["response"].append(stream)
    try:
        yield
    finally:
        hooks["request"].remove(limit)
        hooks["response"].remove(stream)


def run_bounded(work: Callable[[], T], timeout: float, deadline: float | None) -> T:
    """Runs ``work`` (Hub requests) with each request bounded by ``timeout`` and the whole by ``deadline`` seconds.

    With a deadline, ``work`` runs in a worker thread and this call returns by the deadline whatever the server does
    (a request that never completes its headers included); the worker then starts no new request and stops reading
    at its next chunk of data.

    Raises:
        PushDeadlineError: when ``deadline`` seconds have passed.
    """
    if deadline is None:
        with bounded_requests(timeout):
            return work()
    until = time.monotonic() + deadline
    outcome: dict[str, Any] = {}

    def worker() -> None:
        try:
            with bounded_requests(timeout, until):
                outcome["value"] = work()
        except BaseException as error:  # handed to the caller
            outcome["error"] = error

    thread = threading.Thread(target=worker, name="hf-plasticity-push", daemon=True)
    thread.start()
    thread.join(deadline)
    if thread.is_alive():
        raise PushDeadlineError(f"the push took longer than its deadline of {deadline:g} seconds")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
