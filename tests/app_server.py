"""The real app in its own process on a free port, as a user starts it: for browser tests and benchmarks.

``AppServer(data_dir, "--lan", "--host", "127.0.0.1", env={...})`` starts LAN mode on loopback: https with
the self-signed certificate Melange makes (verified here against that very certificate), login required.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
STARTUP = 300  # seconds a start with the real models may take on a busy 2-core machine
ADMIN_PASSWORD = "host-password-for-tests"


def wait_for(condition, what: str, timeout: float = 120):
    """Poll ``condition`` until it returns something true, and return that; the limit only turns a hang into
    a failure (a test waits for an event, never for a time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> None:
        self.port = free_port()
        lan_https = "--lan" in args and "--http" not in args
        self.scheme = "https" if lan_https else "http"
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log = data_dir / "server.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "app.py", "--port", str(self.port), "--data-dir", str(data_dir), *args]
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=environment)
        self._endpoints: dict | None = None
        self._wait_until_up(timeout)

    def inputs(self, api: str, session: requests.Session | None = None, **values) -> list:
        """The named endpoint's inputs in order: the given ones by name, the rest at the defaults it declares
        (read once from ``/gradio_api/info``; ``session``: a signed-in one where the app asks for login)."""
        if self._endpoints is None:
            get = session.get if session is not None else requests.get
            self._endpoints = get(f"{self.url}/gradio_api/info", timeout=30, verify=self.verify).json()["named_endpoints"]
        parameters = self._endpoints[f"/{api}"]["parameters"]
        unknown = set(values) - {p["parameter_name"] for p in parameters}
        if unknown:
            raise ValueError(f"/{api} has no input named {sorted(unknown)}")
        return [values.get(p["parameter_name"], p.get("parameter_default")) for p in parameters]

    def ssl_context(self):
        """What httpx checks the server's certificate against (httpx takes a context, not a path)."""
        import ssl

        return ssl.create_default_context(cafile=self.verify) if self.scheme == "https" else True

    @property
    def verify(self) -> str | bool:
        """What ``requests`` checks the server's certificate against: the one Melange made for itself."""
        return str(self.data_dir / "tls" / "melange-cert.pem") if self.scheme == "https" else True

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if requests.get(f"{self.url}/health", timeout=2, verify=self.verify).ok:
                    return
            except (requests.ConnectionError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the app did not answer within {timeout} s:\n{self.log.read_text()}")

    @classmethod
    def lan(cls, data_dir: Path, *args: str, timeout: float = 120) -> AppServer:
        """LAN mode on loopback with the real engines on the CPU, the host's password ``ADMIN_PASSWORD``."""
        lan_args = ("--lan", "--host", "127.0.0.1", "--device", "cpu", *args)
        return cls(data_dir, *lan_args, env={"MELANGE_ADMIN_PASSWORD": ADMIN_PASSWORD}, timeout=timeout)

    @property
    def passcode(self) -> str:
        """This start's guest passcode, as the server printed it."""
        return self.printed(r"Guest passcode: (\w+)")

    def printed(self, pattern: str) -> str:
        """The first group of ``pattern`` in what the server printed (e.g. its guest passcode)."""
        match = re.search(pattern, self.log.read_text())
        if match is None:
            raise AssertionError(f"{pattern!r} not in the server's output:\n{self.log.read_text()}")
        return match.group(1)

    def health(self, **kwargs) -> dict:
        return requests.get(f"{self.url}/health", timeout=10, verify=self.verify, **kwargs).json()

    def session(self) -> requests.Session:
        """An HTTP session that trusts this server's certificate."""
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE and proxies from the environment would override both
        session.verify = self.verify
        return session

    def login(self, name: str, password: str) -> requests.Session:
        """A signed-in HTTP session (the login form, as a browser posts it)."""
        session = self.session()
        answer = session.post(f"{self.url}/login", data={"name": name, "password": password, "next": "/"}, allow_redirects=False)
        if answer.status_code != 303:
            raise AssertionError(f"login as {name!r} failed: {answer.status_code} {answer.text[:300]}")
        return session

    def press(self, session: requests.Session, elem_id: str) -> list:
        """Press a button of the page (its event through the queue, as the browser sends it); its outputs."""
        import json
        import uuid

        config = session.get(f"{self.url}/config").json()
        button = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id)
        fn_index = next(d["id"] for d in config["dependencies"] if [button, "click"] in [list(t) for t in d["targets"]])
        session_hash = uuid.uuid4().hex
        body = {"data": [], "fn_index": fn_index, "session_hash": session_hash, "event_data": None, "trigger_id": button}
        session.post(f"{self.url}/gradio_api/queue/join", json=body).raise_for_status()
        with session.get(f"{self.url}/gradio_api/queue/data", params={"session_hash": session_hash}, stream=True, timeout=120) as stream:
            for line in stream.iter_lines(decode_unicode=True):
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("msg") == "process_completed":
                        if not message["success"]:
                            raise AssertionError(message)
                        return message["output"]["data"]
        raise AssertionError(f"pressing {elem_id} never completed")

    def api_key(self, name: str, password: str) -> str:
        """An API key for ``name``, made as a person makes one: signed in, on the API keys tab."""
        key = self.press(self.login(name, password), "api-key-new")[0]
        assert key.startswith("mel-"), key
        return key

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:  # an open event stream can hold up a graceful shutdown
            self.process.kill()
            self.process.wait()
