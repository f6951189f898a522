"""The HTTP surface of the foundation, served by a real Hypercorn inside the test."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from quart import Blueprint

from conduwuit.handlers.context import MatrixApp
from conduwuit.handlers.json import json_body, json_response
from tests.support.config import make_config
from tests.support.inprocess import base_url, running_server


def _test_routes(app: MatrixApp) -> None:
    """Routes that exist only in these tests, to reach the shared error paths."""
    bp = Blueprint("test_routes", __name__)

    @bp.post("/_test/echo")
    async def echo():  # type: ignore[no-untyped-def]
        return json_response(await json_body())

    @bp.get("/_test/crash")
    async def crash():  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    @bp.get("/_test/param/<value>/end")
    async def param(value: str):  # type: ignore[no-untyped-def]
        return json_response({"value": value})

    app.register_blueprint(bp)


@pytest.fixture
def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_config(
        tmp_path,
        max_request_size=1024,
        well_known={
            "client": "https://matrix.test.local",
            "server": "matrix.test.local:443",
            "support_email": "admin@test.local",
            "support_mxid": "@admin:test.local",
            "support_page": "https://test.local/help",
        },
    )


async def test_discovery_endpoints(config) -> None:  # type: ignore[no-untyped-def]
    async with running_server(config) as server, httpx.AsyncClient(
        base_url=base_url(server)
    ) as client:
        r = await client.get("/_conduwuit/server_version")
        assert r.status_code == 200
        assert r.json()["name"] == "conduwuit" and r.json()["version"]

        r = await client.get("/_matrix/client/versions")
        body = r.json()
        assert "v1.12" in body["versions"] and isinstance(body["unstable_features"], dict)

        r = await client.get("/_matrix/federation/v1/version")
        assert r.json()["server"]["name"] == "conduwuit"

        r = await client.get("/.well-known/matrix/client")
        assert r.json() == {"m.homeserver": {"base_url": "https://matrix.test.local"}}
        r = await client.get("/.well-known/matrix/server")
        assert r.json() == {"m.server": "matrix.test.local:443"}
        r = await client.get("/.well-known/matrix/support")
        assert r.json() == {
            "contacts": [{"role": "m.role.admin", "email_address": "admin@test.local",
                          "matrix_id": "@admin:test.local"}],
            "support_page": "https://test.local/help",
        }


async def test_well_known_unset_is_404(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_server(config) as server, httpx.AsyncClient(
        base_url=base_url(server)
    ) as client:
        for path in ("client", "server", "support"):
            r = await client.get(f"/.well-known/matrix/{path}")
            assert r.status_code == 404
            assert r.json()["errcode"] == "M_NOT_FOUND"


async def test_federation_disabled(tmp_path: Path) -> None:
    config = make_config(tmp_path, allow_federation=False)
    async with running_server(config) as server, httpx.AsyncClient(
        base_url=base_url(server)
    ) as client:
        r = await client.get("/_matrix/federation/v1/version")
        # One answer for every federation endpoint while federation is off.
        assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"


async def test_error_json(config, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    async with running_server(config, app_hooks=[_test_routes]) as server, httpx.AsyncClient(
        base_url=base_url(server)
    ) as client:
        r = await client.get("/_matrix/client/v3/nonexistent")
        assert (r.status_code, r.json()["errcode"]) == (404, "M_UNRECOGNIZED")

        r = await client.post("/_matrix/client/versions", json={})
        assert (r.status_code, r.json()["errcode"]) == (405, "M_UNRECOGNIZED")

        r = await client.post("/_test/echo", content=b"{not json", headers={
            "content-type": "application/json"})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_NOT_JSON")

        r = await client.post("/_test/echo", content=b"[1, 2]")
        assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON")

        r = await client.post("/_test/echo", json={"a": 1})
        assert (r.status_code, r.json()) == (200, {"a": 1})

        r = await client.post("/_test/echo", json={"a": "x" * 2000})
        assert (r.status_code, r.json()["errcode"]) == (413, "M_TOO_LARGE")

        with caplog.at_level(logging.ERROR):
            r = await client.get("/_test/crash")
        assert (r.status_code, r.json()["errcode"]) == (500, "M_UNKNOWN")
        request_id = r.json()["error"].rsplit(" ", 1)[-1].rstrip(")")
        logged = [rec for rec in caplog.records if request_id in rec.getMessage()]
        assert logged and logged[0].exc_info is not None


async def test_cors_and_security_headers(config) -> None:  # type: ignore[no-untyped-def]
    async with running_server(config) as server, httpx.AsyncClient(
        base_url=base_url(server)
    ) as client:
        r = await client.options(
            "/_matrix/client/v3/login",
            headers={"Origin": "https://app.element.io",
                     "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization, content-type"},
        )
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "*"
        for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            assert method in r.headers["access-control-allow-methods"]
        assert "authorization" in r.headers["access-control-allow-headers"].lower()

        r = await client.get("/_matrix/client/versions")
        assert r.headers["access-control-allow-origin"] == "*"
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["permissions-policy"] == "interest-cohort=()"
        # Errors carry the same headers: browsers must be able to read them.
        r = await client.get("/nope")
        assert r.headers["access-control-allow-origin"] == "*"


async def test_encoded_slashes_stay_inside_one_path_segment(config) -> None:  # type: ignore[no-untyped-def]
    async with running_server(config, app_hooks=[_test_routes]) as server, httpx.AsyncClient(
        base_url=base_url(server)
    ) as client:
        # A v3 event id may contain '/', a literal '%' must not be decoded twice.
        r = await client.get("/_test/param/%24ab%2Fc%2525d%20e/end")
        assert r.json() == {"value": "$ab/c%25d e"}
