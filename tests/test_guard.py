"""Every route the app serves, tried without permission: the whole route table is walked, so a route added
later (by Gradio or by us) is covered without anyone remembering to list it.

In-process (FastAPI's TestClient, fake engines): LAN mode, where the client is not on loopback and has no
session. The same app over real https with real sessions is tests/test_lan.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Mount

import app
from server.principal import HOST
from settings import Settings

LOCAL = "http://127.0.0.1:7860"
PUBLIC = {"/login", "/health"}


def walk(routes, prefix=""):
    for route in routes:
        if isinstance(route, Mount):
            yield from walk(route.routes, prefix + route.path)
        elif hasattr(route, "original_router"):  # FastAPI's included router
            yield from walk(route.original_router.routes, prefix + (getattr(route.include_context, "prefix", "") or ""))
        else:
            for method in sorted(getattr(route, "methods", None) or {"GET"}):
                yield method, prefix + route.path


def concrete(path: str) -> str:
    """A route's path with every parameter filled in (a path parameter with a traversal attempt)."""
    path = re.sub(r"\{[^}]+:path\}", "..%2F..%2Fetc%2Fpasswd", path)
    return re.sub(r"\{[^}]+\}", "x", path)


@pytest.fixture(scope="module")
def lan_app(tmp_path_factory):
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("lan"), engines="fake", lan=True, host="127.0.0.1", admin_password="host-password",
    )  # fmt: skip
    return app.create_app(settings)


@pytest.fixture(scope="module")
def routes(lan_app):
    found = sorted(set(walk(lan_app.routes)))
    assert len(found) > 60, "Gradio's routes are in the walk"
    return found


@pytest.fixture(scope="module")
def anonymous(lan_app):
    return TestClient(lan_app, base_url=LOCAL)


def test_every_route_without_a_session_gets_401_or_the_login_page(anonymous, routes):
    answered = {}
    for method, path in routes:
        if path in PUBLIC or method == "HEAD":
            continue
        answer = anonymous.request(method, concrete(path), headers={"accept": "text/html"}, follow_redirects=False)
        answered[(method, path)] = answer.status_code
        if answer.status_code == 303:
            assert answer.headers["location"].startswith("/login?next="), (method, path)
        else:
            assert answer.status_code == 401, (method, path, answer.status_code, answer.text[:200])
        assert "melange" not in answer.text.lower() or answer.status_code == 303 or "sign in" in answer.text.lower()
    assert ("POST", "/gradio_api/queue/join") in answered and ("GET", "/config") in answered
    # an API client (no text/html) is never redirected: it gets 401 with a reason
    answer = anonymous.get("/gradio_api/info")
    assert answer.status_code == 401 and "Sign in" in answer.json()["detail"]


def test_health_tells_anonymous_callers_only_that_it_is_up(anonymous):
    assert anonymous.get("/health").json() == {"status": "ok"}


def test_a_foreign_host_header_is_refused_on_every_route(anonymous, routes):
    for method, path in routes:
        answer = anonymous.request(method, concrete(path), headers={"host": "rebind.attacker.example"}, follow_redirects=False)
        assert answer.status_code == 400, (method, path)
        assert "access-control-allow-origin" not in answer.headers


@pytest.fixture(scope="module")
def host(lan_app):
    """The host, by API key: every check below is one the host too must pass."""
    key = lan_app.state.sharing.accounts.new_api_key(HOST)
    return TestClient(lan_app, base_url=LOCAL, headers={"authorization": f"Bearer {key}"})


def test_a_foreign_origin_gets_no_cors_grant_and_no_answer(host):
    answer = host.get("/config", headers={"origin": "https://evil.example"})
    assert answer.status_code == 403 and "access-control-allow-origin" not in answer.headers
    preflight = host.options("/gradio_api/queue/join", headers={"origin": "https://evil.example", "access-control-request-method": "POST"})
    assert preflight.headers.get("access-control-allow-origin") != "https://evil.example"


def test_the_apps_own_origin_gets_cors(lan_app):
    client = TestClient(lan_app, base_url="https://127.0.0.1:7860")
    origin = "https://127.0.0.1:7860"
    answer = client.options("/gradio_api/queue/join", headers={"origin": origin, "access-control-request-method": "POST"})
    assert answer.headers.get("access-control-allow-origin") == origin


def test_a_wrong_or_tampered_credential_is_nobody(lan_app):
    client = TestClient(lan_app, base_url=LOCAL)
    accounts = lan_app.state.sharing.accounts
    token = accounts.start_session(HOST)
    def with_cookie(value: str) -> int:
        return client.get("/config", headers={"cookie": f"melange_session={value}"}).status_code

    assert with_cookie(token) == 200
    assert with_cookie(token[:-2] + "zz") == 401
    assert with_cookie("x" * 500) == 401
    assert client.get("/config", headers={"authorization": "Bearer mel-not-a-key"}).status_code == 401
    assert client.get("/config", headers={"cookie": 'melange_session="unterminated'}).status_code == 401
    key = accounts.new_api_key(HOST)
    assert client.get("/config", headers={"authorization": f"Bearer {key}"}).status_code == 200


def test_gradio_features_melange_does_not_use_answer_404_even_for_the_host(host):
    for path in ("/monitoring/summary", "/gradio_api/token", "/gradio_api/vibe-code", "/gradio_api/runs", "/gradio_api/dev/reload"):
        assert host.get(path).status_code == 404, path
    assert host.post("/gradio_api/vibe-edit", json={"prompt": "x"}).status_code == 404


def test_only_the_panel_endpoints_take_named_api_calls(lan_app, host):
    names = {fn.api_name for fn in lan_app.state.blocks.fns.values() if isinstance(fn.api_name, str)}
    assert {"chat", "generate", "transcribe"} <= names and len(names) > 20
    for name in sorted(names - {"chat", "generate", "transcribe"}):
        for route in (f"/gradio_api/call/{name}", f"/gradio_api/run/{name}", f"/gradio_api/api/{name}", f"/gradio_api/call/v2/{name}"):
            answer = host.post(route, json={"data": []})
            assert answer.status_code == 404, (route, answer.status_code)
    info = host.get("/gradio_api/info").json()
    assert set(info["named_endpoints"]) == {"/chat", "/generate", "/transcribe"}


def test_file_routes_serve_nothing_outside_what_the_app_made(lan_app, host):
    data_dir = lan_app.state.settings.data_dir
    secrets_on_disk = [data_dir / "melange.db", data_dir / "tls" / "melange-key.pem", Path("/etc/passwd"), Path("/proc/self/environ")]
    assert all(p.exists() for p in secrets_on_disk)
    for target in secrets_on_disk:
        for spelling in (str(target), quote(str(target), safe=""), f"{data_dir}/images/../{target.relative_to(data_dir)}" if data_dir in target.parents else str(target)):
            for route in (f"/gradio_api/file={spelling}", f"/gradio_api/file/{spelling}"):
                answer = host.get(route)
                assert answer.status_code in (403, 404), (route, answer.status_code)
                assert b"SQLite" not in answer.content and b"PRIVATE KEY" not in answer.content


def test_pages_may_show_images_from_this_server_only(host):
    page = host.get("/")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == "img-src 'self' data: blob:"
    assert page.headers["x-content-type-options"] == "nosniff"
