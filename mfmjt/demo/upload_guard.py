"""An ASGI guard: API calls send files as uploads, and may name only files uploaded to this server.

Gradio refuses a file input that is a plain string, a URL it cannot fetch or a server path outside its
upload folder, but with an empty error ("...has not enabled verbose error reporting"), and it fetches
URLs on the caller's behalf. This middleware answers such an event first, with one sentence saying what
to do, in the form of Gradio's input validation (HTTP 422), which ``gradio_client`` raises as a
``ValidationError`` naming the parameter. It reads the event's file inputs from the app's own event
table, and also refuses any file object in the payload naming a server path outside
``allowed_roots`` (Gradio's upload folder and the demo's example clips).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
MAX_BODY = 64 << 20  # a JSON body larger than this is refused (prompts are capped far below)
FILE_DATA = "gradio.FileData"

UPLOAD_IT = "upload the file with handle_file(path)"
URL_REFUSAL = f"URLs are not fetched: {UPLOAD_IT}"
STRING_REFUSAL = f"a plain string is not a file: {UPLOAD_IT}"
NOT_A_FILE = f"this is not a file: {UPLOAD_IT}"
EXAMPLE_REFUSAL = (
    "a plain string is not a file: send this example clip as "
    '{"path": <its path>, "meta": {"_type": "gradio.FileData"}}, or upload a copy with handle_file(path)'
)


def _is_url(text: str) -> bool:
    return "://" in text[:20] or text.startswith(("http:", "https:", "data:"))


def _paths(data: Any) -> Iterable[str]:
    """Every ``path`` of a file object (a dict with ``meta._type == gradio.FileData``) in ``data``."""
    if isinstance(data, dict):
        meta = data.get("meta")
        if isinstance(meta, dict) and meta.get("_type") == FILE_DATA and isinstance(data.get("path"), str):
            yield data["path"]
        for value in data.values():
            yield from _paths(value)
    elif isinstance(data, list):
        for value in data:
            yield from _paths(value)


def _is_file_input(block: Any) -> bool:
    """Whether a Gradio component takes a file (its data model is Gradio's FileData)."""
    from gradio.data_classes import FileData

    model = getattr(block, "data_model", None)
    return isinstance(model, type) and issubclass(model, FileData)


def _event(app: Any, path: str, payload: Any) -> tuple[Any, list[tuple[str, Any]]] | None:
    """The event a request calls and its (parameter name, value) pairs of file inputs; None if unknown."""
    blocks = app.get_blocks() if hasattr(app, "get_blocks") else None
    if blocks is None or not isinstance(payload, dict):
        return None
    fn = None
    if isinstance(payload.get("fn_index"), int):
        fn = blocks.fns.get(payload["fn_index"])
    else:
        api_name = path.rstrip("/").rsplit("/", 1)[-1]
        fn = next((f for f in blocks.fns.values() if f.api_name == api_name), None)
    if fn is None:
        return None
    names = list(getattr(fn, "input_parameter_names", None) or [])
    data = payload.get("data", payload)
    files = []
    for i, block in enumerate(fn.inputs):
        if not _is_file_input(block):
            continue
        name = (names[i] if i < len(names) else None) or getattr(block, "label", None) or f"input {i}"
        if isinstance(data, list):
            value = data[i] if i < len(data) else None
        elif isinstance(data, dict):
            value = data.get(name)
        else:
            continue
        files.append((name, value))
    return fn, files


class UploadGuard:
    """Refuses, with a plain sentence, events whose file inputs are not uploads to this server."""

    def __init__(
        self,
        app: Callable,
        allowed_roots: Callable[[], list[Path]],
        example_roots: Callable[[], list[Path]] | None = None,
    ) -> None:
        self.app = app
        self.allowed_roots = allowed_roots
        self.example_roots = example_roots or (lambda: [])

    def _outside(self, path: str, roots: list[Path]) -> str | None:
        """A refusal if the file object's ``path`` is a URL or a server file outside ``roots``."""
        if _is_url(path):
            return URL_REFUSAL
        try:
            resolved = Path(path).resolve()
        except (OSError, ValueError):
            return f"a file in the request cannot be used; {UPLOAD_IT}"
        if not any(resolved.is_relative_to(root) for root in roots):
            logger.warning("refused a request naming a server file outside the uploads: %s", path[:200])
            return f"the file {Path(path).name[:80]!r} was not uploaded to this demo; {UPLOAD_IT}"
        return None

    def _input_refusal(self, value: Any) -> str | None:
        """A refusal for a file input that is not a file object (None: it is one, or empty)."""
        if value is None or (isinstance(value, dict) and list(_paths(value)) == [value.get("path")]):
            return None  # empty, or one file object (whose path the caller checks)
        if isinstance(value, str):
            if not value:
                return NOT_A_FILE
            if _is_url(value):
                return URL_REFUSAL
            try:
                resolved = Path(value[:4096]).resolve()
                if any(resolved.is_relative_to(r.resolve()) for r in self.example_roots()):
                    return EXAMPLE_REFUSAL
            except (OSError, ValueError):
                pass
            return STRING_REFUSAL
        return NOT_A_FILE

    def refusal(self, app: Any, path: str, body: bytes) -> tuple[str, str | None] | None:
        """(message, parameter name or None) when the request must be refused, else None."""
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            return None  # Gradio answers malformed JSON itself
        event = _event(app, path, payload)
        if event is not None:
            for name, value in event[1]:
                message = self._input_refusal(value)
                if message is not None:
                    logger.info("refused %s of %s: %s", name, event[0].api_name, message)
                    return message, name
        roots = [root.resolve() for root in self.allowed_roots()]
        for file_path in _paths(payload):
            message = self._outside(file_path, roots)
            if message is not None:
                name = next((n for n, v in (event[1] if event else []) if file_path in _paths(v)), None)
                return message, name
        return None

    @staticmethod
    def guarded(scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        path = scope["path"].rstrip("/")
        return path.endswith("/queue/join") or any(f"/{kind}/" in path for kind in ("run", "api", "call"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.guarded(scope):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > MAX_BODY:
                await self._answer(send, 413, f"the request is larger than {MAX_BODY >> 20} MB", None)
                return
        body = b"".join(chunks)
        refusal = self.refusal(scope.get("app"), scope["path"], body)
        if refusal is not None:
            await self._answer(send, 422, *refusal)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _answer(send: Send, status: int, message: str, parameter: str | None) -> None:
        """Gradio's validation answer (what gradio_client raises as a ValidationError with ``message``)."""
        detail: Any = message
        if status == 422:
            detail = [
                {
                    "__type__": "validate",
                    "is_valid": False,
                    "message": message,
                    "parameter_name": parameter or "file",
                }
            ]
        body = json.dumps({"detail": detail, "error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
