"""Over forty bad inputs through the real app's APIs (tests/bad_inputs.py): each gets a 4xx in OpenAI's shape or a
gr.Error that says what is wrong, nothing is accepted that should not be, and the app keeps serving after each."""

from __future__ import annotations

import httpx
import pytest

from tests import bad_inputs
from tests.app_server import STARTUP, AppServer

ALL = bad_inputs.CASES + bad_inputs.ACCEPTED


@pytest.fixture(scope="module")
def callers(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("melange-bad-inputs")
    files = bad_inputs.make_files(tmp_path_factory.mktemp("bad-files"), data_dir / "models")
    server = AppServer(data_dir, "--device", "cpu", timeout=STARTUP)
    http = httpx.Client(trust_env=False, timeout=300)
    yield bad_inputs.Callers(server, files, http)
    http.close()
    server.stop()


def test_there_are_at_least_forty():
    assert len(bad_inputs.CASES) >= 40


@pytest.mark.parametrize("case", ALL, ids=[c.name for c in ALL])
def test_bad_input_gets_a_clear_answer_and_the_app_keeps_serving(callers, case):
    answer = case.send(callers)
    assert bad_inputs.judge(case, answer) is None, bad_inputs.judge(case, answer)
    assert callers.server.health()["status"] == "ok"
