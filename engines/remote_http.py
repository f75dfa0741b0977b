"""What the remote engines share: one HTTP client for a server's OpenAI-style ``/v1`` API, its errors as ours.

The base URL is the server's ``/v1`` address (``http://gpu-box:8000/v1``), as OpenAI's clients take it. The
API key goes in the ``Authorization`` header only: it is never part of a message, a status or a log line.
A refused request (HTTP 4xx but the key) is the caller's ``InputError``, with the server's own message; an
unreachable or failing server is an ``EngineError`` that names the server.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from engines.base import EngineError, InputError

REMOTE_DEVICE = "remote"  # what a remote engine reports as its device: its memory and compute are the server's

CONNECT_SECONDS = 10.0


def server_message(response: httpx.Response) -> str:
    """The message an OpenAI-style (or FastAPI) error body carries, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip()
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            return str(detail[0].get("msg", detail[0]))
    return str(body)[:300]


class RemoteServer:
    """A ``/v1`` API elsewhere. ``what`` names it in messages ("chat server")."""

    def __init__(self, base_url: str, api_key: str | None = None, what: str = "server", timeout: float = 600.0, ca_file: str | None = None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise EngineError(f"The {what}'s address must start with http:// or https://, got {base_url!r}.")
        self.base_url = base_url.rstrip("/")
        self.what = what
        self.timeout = httpx.Timeout(timeout, connect=CONNECT_SECONDS)
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        # https: the system's certificate authorities, or the one file given (another Melange's self-signed one).
        self._verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self.client = self.new_client()

    def new_client(self) -> httpx.Client:
        # The servers a team runs its models on are on its own network: proxies from the environment are not.
        return httpx.Client(base_url=self.base_url, headers=self._headers, timeout=self.timeout, trust_env=False, verify=self._verify)

    def new_async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=self.timeout, trust_env=False, verify=self._verify)

    def __repr__(self) -> str:  # never the key
        return f"RemoteServer({self.base_url!r})"

    @contextmanager
    def errors(self) -> Iterator[None]:
        """httpx's failures as the engine contract's errors, naming the server but never the key."""
        try:
            yield
        except httpx.TimeoutException as e:
            raise EngineError(f"The {self.what} at {self.base_url} did not answer in time ({type(e).__name__}).") from None
        except httpx.HTTPError as e:
            raise EngineError(f"Cannot reach the {self.what} at {self.base_url}: {type(e).__name__}.") from None

    def check(self, response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        if not response.is_closed:
            response.read()
        message = server_message(response)
        if response.status_code in (401, 403):
            raise EngineError(f"The {self.what} at {self.base_url} refused Melange's API key (HTTP {response.status_code}).")
        if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
            raise InputError(f"The {self.what} refused the request: {message}")
        raise EngineError(f"The {self.what} at {self.base_url} answered HTTP {response.status_code}: {message}")

    def get(self, path: str) -> dict:
        with self.errors():
            try:
                response = self.client.get(path)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # A kept-alive connection the server closed as we reused it (uvicorn drops idle ones after 5 s):
                # a GET is safe to send again, once, on a fresh connection.
                response = self.client.get(path)
            return self.check(response).json()

    def post(self, path: str, client: httpx.Client | None = None, **kwargs) -> dict:
        with self.errors():
            return self.check((client or self.client).post(path, **kwargs)).json()

    def model_ids(self, kind: str | None = None) -> list[str]:
        """The ids ``/models`` lists; those of ``kind`` when the server says which are which (Melange does)."""
        data = self.get("/models").get("data") or []
        ids = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
        kinds = {m["id"]: m.get("kind") for m in data if isinstance(m, dict) and "id" in m}
        if kind is not None and any(kinds.values()):
            ids = [i for i in ids if kinds.get(i) in (kind, None)]
        return ids

    def choose_model(self, wanted: str | None, kind: str, *, unlisted_ok: bool = False) -> str:
        """The model to use: ``wanted``, which must be one the server lists, else the first it lists.
        ``unlisted_ok``: a server that lists no models at all (some transcription servers) is taken at its word."""
        available = self.model_ids(kind)
        if wanted is not None and (wanted in available or (unlisted_ok and not available)):
            return wanted
        if not available:
            raise EngineError(f"The {self.what} at {self.base_url} lists no models.")
        if wanted is None:
            return available[0]
        raise EngineError(f"The {self.what} has no model {wanted!r}; it has {', '.join(available[:8])}.")

    def events(self, path: str, body: dict) -> Iterator[dict]:
        """A streamed answer's events (``data: {...}`` lines), until ``[DONE]``. Closing the iterator closes the
        connection, which is how OpenAI-style servers learn to stop generating."""
        with self.errors(), self.client.stream("POST", path, json=body) as response:
            self.check(response)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    raise EngineError(f"The {self.what} sent something that is not JSON in its stream.") from None
                if isinstance(event, dict) and event.get("error"):
                    error = event["error"]
                    message = error.get("message") if isinstance(error, dict) else str(error)
                    raise EngineError(f"The {self.what} failed mid-answer: {message}")
                yield event
        # An OpenAI-style stream ends with [DONE]; llama-cpp-python's server just stops when generation fails.
        raise EngineError(f"The {self.what} ended its answer without finishing it (see the server's log).")

    def close(self) -> None:
        self.client.close()
