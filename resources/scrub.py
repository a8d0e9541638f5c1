"""Keeping an endpoint's key out of everything flywheel records.

Error text from an LLM endpoint is copied into asset metadata (`failure_examples`), logs and exceptions, and
some gateways echo the request's Authorization header in their error bodies. `scrub_secrets` is the one
function that cleans such text: the key's own value, and anything that looks like a bearer token or an
`sk-...` key, become `***`. `ScrubbingHttpClient` applies it to every error response's body as it arrives, so
the OpenAI client's exception, instructor's retry logs and ours only ever see the scrubbed text.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

import httpx2

MASK = "***"
# "Bearer <token>" / "Basic <token>" (an echoed Authorization header) and OpenAI-style keys (sk-..., sk-proj-...)
_TOKENS = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+|\bsk-[A-Za-z0-9_-]{8,}")
_NOT_SECRETS = {"", "EMPTY"}   # the placeholder a keyless local server gets


def scrub_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with each of `secrets` and every bearer-token- or sk-key-looking string replaced by ***."""
    for secret in sorted({str(s) for s in secrets} - _NOT_SECRETS, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _TOKENS.sub(lambda m: f"{m.group(1)} {MASK}" if m.group(1) else MASK, text)


class ScrubbingHttpClient(httpx2.Client):
    """The OpenAI client's HTTP client, with `scrub_secrets` applied to the body of every 4xx/5xx response."""

    def __init__(self, secrets: Iterable[str], **kwargs) -> None:
        self._secrets = tuple(secrets)
        kwargs.setdefault("follow_redirects", True)   # as the SDK's own client; the SDK sets the timeout per request
        super().__init__(**kwargs)

    def send(self, request: httpx2.Request, **kwargs) -> httpx2.Response:
        response = super().send(request, **kwargs)
        if response.status_code < 400:
            return response
        try:
            body = response.read()   # decoded: no content-encoding left
        finally:
            response.close()
        clean = scrub_secrets(body.decode("utf-8", errors="replace"), self._secrets).encode()
        headers = [(k, v) for k, v in response.headers.multi_items()
                   if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")]
        return httpx2.Response(response.status_code, headers=headers, content=clean, request=request,
                               extensions=response.extensions, history=response.history)
