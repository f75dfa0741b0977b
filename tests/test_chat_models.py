"""Chat model discovery and the real Hugging Face download code, against a local stand-in for the hub.

The hub is out of reach here, so a small HTTP server on 127.0.0.1 answers the same resolve URLs the hub
does; huggingface_hub talks to it through HF_ENDPOINT, unchanged.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engines import chat_models, embedded

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = b"GGUF" + bytes(range(256)) * 800
FILES = {("someone/tiny-GGUF", "tiny.Q4_0.gguf"): PAYLOAD}


class FakeHub(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> bytes | None:
        parts = self.path.split("/resolve/main/")
        repo, filename = parts[0].strip("/"), parts[-1] if len(parts) == 2 else ""
        body = FILES.get((repo, filename))
        if body is None:
            known_repo = any(r == repo for r, _ in FILES)
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound" if known_repo else "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(200)
        self.send_header("X-Repo-Commit", "0" * 40)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return body

    def do_HEAD(self):
        self._answer()

    def do_GET(self):
        body = self._answer()
        if body is not None:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def download_in_subprocess(hub: str, hf_home: Path, repo: str, filename: str) -> dict:
    """huggingface_hub reads HF_ENDPOINT when imported, so each download runs in a fresh interpreter."""
    code = (
        "import json, sys\n"
        "from engines import chat_models\n"
        "try:\n"
        f"    print(json.dumps({{'path': str(chat_models.download({repo!r}, {filename!r}))}}))\n"
        "except Exception as e:\n"
        "    print(json.dumps({'error': type(e).__name__, 'message': str(e)}))\n"
    )
    env = {**os.environ, "HF_ENDPOINT": hub, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_download_lands_in_the_standard_hub_cache(hub, tmp_path):
    result = download_in_subprocess(hub, tmp_path / "hf", "someone/tiny-GGUF", "tiny.Q4_0.gguf")
    path = Path(result["path"])
    assert path.read_bytes() == PAYLOAD
    assert path.is_relative_to(tmp_path / "hf" / "hub" / "models--someone--tiny-GGUF")


def test_a_missing_repo_or_file_gets_a_clear_message(hub, tmp_path):
    repo = download_in_subprocess(hub, tmp_path / "hf", "someone/no-such-repo", "x.gguf")
    assert repo["error"] == "InputError" and "No model repo 'someone/no-such-repo'" in repo["message"]
    file = download_in_subprocess(hub, tmp_path / "hf", "someone/tiny-GGUF", "missing.gguf")
    assert file["error"] == "InputError" and "has no file 'missing.gguf'" in file["message"]


def test_the_embedded_model_is_always_offered(tmp_path):
    choices = chat_models.find_models(tmp_path / "absent")
    assert [c.path for c in choices] == [embedded.smollm2_gguf()]
