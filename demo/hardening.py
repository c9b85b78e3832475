"""Request hardening for the demo: bounded request bodies, rate-limited logins, refusals that say why.

Gradio's own checks run before the app's handlers; these make them bounded (a body is refused
before it is read), rate-limited (failed logins per address) and explained (an unknown route is a
404 naming the real endpoints; an input Gradio refuses gets a reason instead of ``null``).
:func:`demo.app.launch` installs them.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
import traceback
from typing import Any, Callable

import gradio as gr
import pydantic
from fastapi import HTTPException
from gradio.exceptions import InvalidPathError
from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from fer_utils.imaging import MAX_BYTES, quote_input

log = logging.getLogger("fer_demo")

# Request bodies are refused past these sizes before anything reads them (see BodySizeLimit): an
# upload carries one file of at most MAX_BYTES (Gradio's max_file_size checks the file itself), and
# every other body (JSON for /gradio_api/call/*, /queue/join, streamed webcam frames) at most one
# base64 data URL of MAX_BYTES (4/3 bigger) and the rest of the request.
UPLOAD_BODY_LIMIT = MAX_BYTES + 64 * 1024  # the multipart framing around the file
BODY_LIMIT = MAX_BYTES * 4 // 3 + 64 * 1024
MESSAGE_LIMIT = 500  # a message that is logged or sent back, at most (it quotes at most ~100 characters of input)
# Logins: after LOGIN_FAILURES wrong ones from one address within LOGIN_WINDOW s, that address is
# refused (HTTP 429) for LOGIN_BLOCK s. The address is the connection's (X-Forwarded-For is not trusted).
LOGIN_FAILURES = 5
LOGIN_WINDOW = 60.0
LOGIN_BLOCK = 60.0
LOGIN_ADDRESSES_KEPT = 10_000  # addresses remembered at most (the oldest are forgotten first)
# uvicorn (under Gradio) takes the client address from X-Forwarded-For when the connection comes
# from an address in FORWARDED_ALLOW_IPS, 127.0.0.1 by default: any local process could then pick
# its own address for the login limit. launch() sets it to none unless it is set (behind a reverse
# proxy on this machine, set FORWARDED_ALLOW_IPS=127.0.0.1 so each client is counted, not the proxy).
FORWARDED_ENV = "FORWARDED_ALLOW_IPS"



class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a body streams past its limit (an HTTPException, so FastAPI's body
    parsing passes it on as a 413 instead of "There was an error parsing the body")."""

    def __init__(self, limit: int):
        super().__init__(status_code=413, detail=body_limit_message(limit))


def body_limit_message(limit: int, size: int | None = None) -> str:
    sent = f"is {size / 1024 / 1024:.1f} MB" if size is not None else "goes past the limit"
    return (f"The request body {sent}; the limit is {limit / 1024 / 1024:.1f} MB (an upload of up to "
            f"{MAX_BYTES // (1024 * 1024)} MB, or its base64 data URL). Please send a smaller photo.")


class BodySizeLimit:
    """ASGI middleware: refuse request bodies over the limit before they are read (HTTP 413).

    A Content-Length over the limit is answered at once; a body without one (chunked) is counted
    while it streams and refused as soon as it passes the limit. Multipart bodies (uploads) get
    ``upload_limit``, every other body (JSON with data URLs, ...) ``limit``.
    """

    def __init__(self, app, limit: int = BODY_LIMIT, upload_limit: int = UPLOAD_BODY_LIMIT):
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit

    def limit_for(self, content_type: str) -> int:
        return self.upload_limit if content_type.lower().startswith("multipart/") else self.limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        limit = self.limit_for(headers.get("content-type", ""))
        declared = headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await JSONResponse({"detail": "Invalid Content-Length header."}, 400)(scope, receive, send)
            if size > limit:
                log.info("refused a %.1f MB request body for %s (limit %.1f MB)", size / 2**20,
                         quote_input(scope.get("path", ""), 100), limit / 2**20)
                return await JSONResponse({"detail": body_limit_message(limit, size)}, 413)(scope, receive, send)
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            log.info("refused a streamed request body for %s past %.1f MB", quote_input(scope.get("path", ""), 100),
                     limit / 2**20)
            if not started:
                await JSONResponse({"detail": body_limit_message(limit)}, 413)(scope, receive, send)


class LoginLimiter:
    """Failed logins per client address: after ``failures`` within ``window`` s, the address is refused
    for ``block`` s (logged once per block). ``clock`` is replaceable for tests."""

    def __init__(self, failures: int = LOGIN_FAILURES, window: float = LOGIN_WINDOW, block: float = LOGIN_BLOCK,
                 kept: int = LOGIN_ADDRESSES_KEPT):
        self.failures, self.window, self.block, self.kept = failures, window, block, kept
        self.clock: Callable[[], float] = time.monotonic
        self._failed: collections.OrderedDict[str, collections.deque] = collections.OrderedDict()
        self._blocked: dict[str, float] = {}  # address -> when the block ends
        self._lock = threading.Lock()

    def blocked_for(self, address: str) -> float:
        """Seconds this address is still refused (0: it may try)."""
        with self._lock:
            until = self._blocked.get(address)
            if until is None:
                return 0.0
            left = until - self.clock()
            if left <= 0:
                del self._blocked[address]
                self._failed.pop(address, None)
                return 0.0
            return left

    def failed(self, address: str) -> bool:
        """Count a failed login; True when this failure starts a block."""
        now = self.clock()
        with self._lock:
            times = self._failed.pop(address, None) or collections.deque()
            times.append(now)
            while times and now - times[0] > self.window:
                times.popleft()
            self._failed[address] = times
            while len(self._failed) > self.kept:
                self._failed.popitem(last=False)
            if len(times) >= self.failures:
                self._blocked[address] = now + self.block
                if len(self._blocked) > self.kept:
                    self._blocked = {a: t for a, t in self._blocked.items() if t > now}
                return True
            return False

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failed.pop(address, None)


class LoginRateLimit:
    """ASGI middleware for Gradio's ``POST /login``: refuse an address that keeps failing (HTTP 429)."""

    def __init__(self, app, limiter: LoginLimiter):
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path", "").rstrip("/") != "/login":
            return await self.app(scope, receive, send)
        address = (scope.get("client") or ("unknown", 0))[0]
        left = self.limiter.blocked_for(address)
        if left > 0:
            seconds = int(left) + 1
            response = JSONResponse({"detail": f"Too many failed logins from this address; try again in {seconds} s."},
                                    429, headers={"Retry-After": str(seconds)})
            return await response(scope, receive, send)
        status = 0

        async def watched_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watched_send)
        if 400 <= status < 500:
            if self.limiter.failed(address):
                log.warning("login: %d failed attempts from %s within %.0f s; refusing it for %.0f s",
                            self.limiter.failures, address, self.limiter.window, self.limiter.block)
        elif 200 <= status < 300:
            self.limiter.succeeded(address)


def public_endpoints(blocks: gr.Blocks) -> list[str]:
    return sorted(f"/{fn.api_name}" for fn in blocks.fns.values()
                  if fn.fn and fn.api_name and fn.api_visibility == "public")


async def unknown_endpoint(request, error) -> JSONResponse:
    """/gradio_api/call/<name> (and /run/<name>) for a name that is no endpoint: 404 naming the real ones
    (Gradio raises FnIndexInferError, which would be a 500 and a traceback)."""
    name = quote_input(request.path_params.get("api_name", ""), 60)
    blocks = request.app.get_blocks()
    known = public_endpoints(blocks)
    log.info("refused a call to an unknown endpoint /%s", name)
    return JSONResponse({"detail": f"There is no API endpoint named /{name}. The endpoints are: {', '.join(known)}.",
                         "endpoints": known}, 404)


def input_refusal(error: Exception, block_fn: Any) -> str:
    """Why Gradio's own input checks refused a request, in a sentence (Gradio would answer {"error": null})."""
    name = f"/{block_fn.api_name}" if getattr(block_fn, "api_name", None) else "This event"
    text = str(error)
    counts = re.search(r"needed: (\d+), got: (\d+)", text)
    if isinstance(error, ValueError) and counts:
        return f"{name} takes {counts[1]} input values; the request sent {counts[2]}."
    if isinstance(error, (InvalidPathError, OSError)):
        return (f"{name}: the file the request names was not uploaded to this server. Upload it first (POST "
                "/gradio_api/upload; gradio_client's handle_file() does it) and send the path it returns, or send "
                "the image inline as FileData.url = 'data:image/...;base64,...'.")
    if isinstance(error, pydantic.ValidationError):
        first = (error.errors() or [{}])[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "value"
        return f"{name}: an input is not valid ({quote_input(where, 60)}: {quote_input(first.get('msg', ''))})."
    return f"{name} refused its inputs ({type(error).__name__}: {quote_input(error)})."


def guard_blocks(blocks: gr.Blocks) -> gr.Blocks:
    """Every error of a request says why, and never logs the request's payload.

    Gradio answers an error that is not a gr.Error with ``{"error": null}`` (show_error=False) and
    prints its traceback, whose message may quote the whole input (a data URL in FileData.path:
    megabytes). Its input checks (``preprocess_data``: input count, uploaded-file check, FileData
    validation) become a gr.Error with a short reason; anything else that escapes a handler becomes
    a gr.Error that points to the server log, where a bounded traceback is written. (Replaced on the
    instance, as in :func:`photo_input`.)
    """
    if getattr(blocks, "fer_guarded", False):
        return blocks
    preprocess_data, process_api = blocks.preprocess_data, blocks.process_api

    async def checked_preprocess_data(block_fn, *args, **kwargs):
        try:
            return await preprocess_data(block_fn, *args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:
            reason = input_refusal(error, block_fn)
            log.info("refused a request's inputs: %s", reason)
            raise gr.Error(reason, title="Request refused", print_exception=False) from None

    async def guarded_process_api(*args, **kwargs):
        try:
            return await process_api(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:
            log.error("a request failed: %s", bounded_traceback(error))
            raise gr.Error("Something went wrong on the server (the details are in its log).",
                           print_exception=False) from None

    blocks.preprocess_data = checked_preprocess_data
    blocks.process_api = guarded_process_api
    blocks.fer_guarded = True
    return blocks


def bounded_traceback(error: BaseException) -> str:
    """The exception's type, its message cut short and the stack (code lines only, never the values):
    an exception about an upload may quote all of it (an OSError quotes a "file name" that is a data URL)."""
    stack = "".join(traceback.format_tb(error.__traceback__))
    return f"{type(error).__name__}: {quote_input(error)}\nTraceback (most recent call last):\n{stack}".rstrip()
