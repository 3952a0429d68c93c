"""An ASGI guard: API calls may name only files that were uploaded to this server.

Gradio itself refuses an event whose file data names a server path outside its upload folder, but
with an empty error. This middleware refuses such a request first, with a sentence saying what to do:
any event payload naming a local file outside Gradio's upload folder (or the demo's example clips).
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
GUARDED_SUFFIXES = ("/queue/join", "/run/predict")
MAX_BODY = 64 << 20  # a JSON body larger than this is refused (prompts are capped far below)


def _paths(data: Any) -> Iterable[str]:
    """Every ``path`` of a file object (a dict with ``meta._type == gradio.FileData``) in ``data``."""
    if isinstance(data, dict):
        meta = data.get("meta")
        if (
            isinstance(meta, dict)
            and meta.get("_type") == "gradio.FileData"
            and isinstance(data.get("path"), str)
        ):
            yield data["path"]
        for value in data.values():
            yield from _paths(value)
    elif isinstance(data, list):
        for value in data:
            yield from _paths(value)


class UploadGuard:
    """Refuses (HTTP 400, a plain sentence) events naming files outside ``allowed_roots``."""

    def __init__(self, app: Callable, allowed_roots: Callable[[], list[Path]]) -> None:
        self.app = app
        self.allowed_roots = allowed_roots

    def _refusal(self, body: bytes) -> str | None:
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            return None  # Gradio answers malformed JSON itself
        roots = [root.resolve() for root in self.allowed_roots()]
        for path in _paths(payload):
            if path.startswith(("http://", "https://")):
                continue
            try:
                resolved = Path(path).resolve()
            except (OSError, ValueError):
                return "a file in the request cannot be used; upload it"
            if not any(resolved.is_relative_to(root) for root in roots):
                logger.warning("refused a request naming a server file outside the uploads: %s", path[:200])
                return f"the file {Path(path).name[:80]!r} was not uploaded to this demo; upload it"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not scope["path"].endswith(GUARDED_SUFFIXES)
        ):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > MAX_BODY:
                await self._answer(send, 413, f"the request is larger than {MAX_BODY >> 20} MB")
                return
        body = b"".join(chunks)
        refusal = self._refusal(body)
        if refusal is not None:
            await self._answer(send, 400, refusal)
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
    async def _answer(send: Send, status: int, message: str) -> None:
        body = json.dumps({"detail": message, "error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
