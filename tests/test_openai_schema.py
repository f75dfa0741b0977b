"""Schemathesis against the app's own OpenAPI schema, ``/v1`` only: no generated request, valid or not, may get
a 5xx. The real app with its embedded models, in LAN mode over https, fuzzed as a guest with an API key and
small guest caps, so that the requests the engines accept stay cheap and the run stays within minutes.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.app_server import ROOT, STARTUP, AppServer

# Most generated requests name a model the app runs, so that they reach the engines; the rest test the 404.
CONFIG = """
[dictionaries.models]
values = ["chat", "image", "speech", "whisper-1"]

[parameters]
"body.model" = { dictionary = "models", probability = 0.9 }
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = AppServer.lan(
        tmp_path_factory.mktemp("fuzz"), "--no-loopback-is-host",
        "--guest-max-tokens", "8", "--guest-max-image-work", "0.1", "--guest-max-audio-minutes", "1", timeout=STARTUP,
    )  # fmt: skip
    yield server
    server.stop()


def test_no_generated_request_gets_a_server_error(server, tmp_path):
    key = server.api_key("Fuzzer", server.passcode)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    run = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{server.url}/openapi.json",
            "--include-path-regex", "^/v1/", "--checks", "not_a_server_error", "--max-examples", "25", "--seed", "7",
            "--header", f"Authorization: Bearer {key}", "--tls-verify", str(server.verify), "--request-timeout", "300",
            "--workers", "1", "--no-color",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    report = run.stdout[-8000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "8 selected" in run.stdout and " passed" in run.stdout, report
    assert key not in server.log.read_text(), "the guest's key reached the log"
    assert server.health()["status"] == "ok"
