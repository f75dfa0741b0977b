"""A stand-in for the Hugging Face hub on 127.0.0.1: the few URLs huggingface_hub's downloads use.

The real hub is out of reach here; huggingface_hub talks to this one through HF_ENDPOINT, unchanged.
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

ROOT = Path(__file__).resolve().parent.parent
COMMIT = "0" * 40


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        self.repos = repos
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _answer(self) -> None:
                path = self.path.split("?")[0]
                if path.startswith("/api/models/"):  # /api/models/{owner}/{name}/(revision|tree)/{rev}
                    parts = path.split("/")
                    repo, kind = "/".join(parts[3:5]), parts[5] if len(parts) > 5 else ""
                    files = hub.repos.get(repo)
                    if files is None:
                        return self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"})
                    if kind == "tree":
                        info = [
                            {"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                            for f, b in files.items()
                        ]
                    else:
                        info = {"id": repo, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}
                    return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})
                repo, _, rest = path.strip("/").partition("/resolve/")
                filename = rest.partition("/")[2]
                files = hub.repos.get(repo)
                if files is None:
                    return self._send(404, headers={"X-Error-Code": "RepoNotFound"})
                if filename not in files:
                    return self._send(404, headers={"X-Error-Code": "EntryNotFound"})
                body = files[filename]
                etag = hashlib.sha256(body).hexdigest()
                self._send(200, body, {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"'})

            do_GET = do_HEAD = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()

    def run(self, code: str, hf_home: Path) -> dict:
        """Run ``code`` (which prints one JSON line) in a fresh interpreter pointed at this hub:
        huggingface_hub reads HF_ENDPOINT when it is imported."""
        env = {**os.environ, "HF_ENDPOINT": self.url, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1"}
        env.pop("HF_HUB_OFFLINE", None)
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        lines = out.stdout.strip().splitlines()
        assert lines, out.stderr[-3000:]
        return json.loads(lines[-1])


def calling(expression: str) -> str:
    """Code that prints {'result': <expression as str>} or {'error': type, 'message': text}."""
    return (
        "import json\n"
        "try:\n"
        f"    print(json.dumps({{'result': str({expression})}}))\n"
        "except Exception as e:\n"
        "    print(json.dumps({'error': type(e).__name__, 'message': str(e)}))\n"
    )
