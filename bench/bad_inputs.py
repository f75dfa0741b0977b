"""Bad inputs through the running app's APIs (the cases in tests/bad_inputs.py): prints JSON with each input,
the answer it got (status and message) and whether that answer is right; the app must keep serving.

    .venv/bin/python bench/bad_inputs.py > bench/results/bad_inputs.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.common import machine  # noqa: E402
from tests import bad_inputs  # noqa: E402
from tests.app_server import STARTUP, AppServer  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="melange-bad-inputs-") as tmp:
        data_dir = Path(tmp) / "data"
        files = bad_inputs.make_files(Path(tmp) / "files", data_dir / "models")
        server = AppServer(data_dir, "--device", "cpu", timeout=STARTUP)
        try:
            with httpx.Client(trust_env=False, timeout=300) as http:
                callers = bad_inputs.Callers(server, files, http)
                results = []
                for case in bad_inputs.CASES + bad_inputs.ACCEPTED:
                    started = time.perf_counter()
                    try:
                        answer = case.send(callers)
                    except Exception as e:  # noqa: BLE001 -- the bench reports every case, whatever breaks
                        answer = bad_inputs.Answer("exception", f"{type(e).__name__}: {e}")
                    problem = bad_inputs.judge(case, answer)
                    serving = server.health().get("status") == "ok"
                    results.append({
                        "input": case.name, "status": answer.status, "message": answer.message[:400],
                        "right": problem is None, "problem": problem, "still_serving": serving,
                        "seconds": round(time.perf_counter() - started, 3),
                    })  # fmt: skip
                    print(f"{'ok ' if problem is None else 'BAD'} {case.name}: {answer.status} {answer.message[:120]!r}", file=sys.stderr)
        finally:
            server.stop()
    summary = {"cases": len(results), "right": sum(r["right"] for r in results), "still_serving": all(r["still_serving"] for r in results)}
    print(json.dumps({"bench": "bad_inputs", "machine": machine(), "summary": summary, "results": results}, indent=2))


if __name__ == "__main__":
    main()
