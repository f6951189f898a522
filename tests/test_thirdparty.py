"""Third-party identifier endpoints, answered as a server without email/SMS/identity server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from conduwuit.server import Server
from tests.support.users import LoggedIn, make_user

V3 = "/_matrix/client/v3"
R0 = "/_matrix/client/r0"
EMAIL_BODY = {"client_secret": "monkeys_are_GREAT", "email": "alice@example.org",
              "send_attempt": 1}
MSISDN_BODY = {"client_secret": "s", "country": "GB", "phone_number": "07700900001",
               "send_attempt": 1}


@pytest.fixture
async def alice(server: Server) -> LoggedIn:
    return await make_user(server, "alice")


@pytest.mark.parametrize("prefix", [V3, R0])
async def test_no_threepids(client: httpx.AsyncClient, alice: LoggedIn, prefix: str) -> None:
    r = await client.get(f"{prefix}/account/3pid", headers=alice.headers)
    assert r.status_code == 200 and r.json() == {"threepids": []}


@pytest.mark.parametrize("path", ["/account/3pid", "/account/3pid/add", "/account/3pid/bind"])
async def test_adding_and_binding_are_forbidden(client: httpx.AsyncClient, alice: LoggedIn,
                                                path: str) -> None:
    body = {"client_secret": "s", "sid": "1", "id_server": "id.example.org",
            "id_access_token": "t", "three_pid_creds": {}}
    r = await client.post(f"{V3}{path}", json=body, headers=alice.headers)
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    assert r.json()["error"]


@pytest.mark.parametrize("path", ["/account/3pid/delete", "/account/3pid/unbind"])
async def test_delete_and_unbind_report_no_support(client: httpx.AsyncClient, alice: LoggedIn,
                                                   path: str) -> None:
    r = await client.post(f"{V3}{path}", json={"medium": "email", "address": "a@example.org"},
                          headers=alice.headers)
    assert r.status_code == 200 and r.json() == {"id_server_unbind_result": "no-support"}
    r = await client.post(f"{R0}{path}", json={"medium": "msisdn", "address": "447700900001",
                                               "id_server": "id.example.org"},
                          headers=alice.headers)
    assert r.json() == {"id_server_unbind_result": "no-support"}


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"address": "a@example.org"}, "M_MISSING_PARAM"),
        ({"medium": "email"}, "M_MISSING_PARAM"),
        ({"medium": 1, "address": "a@example.org"}, "M_BAD_JSON"),
        ({"medium": "pigeon", "address": "a@example.org"}, "M_INVALID_PARAM"),
        ({"medium": "email", "address": "a@example.org", "id_server": 5}, "M_BAD_JSON"),
    ],
)
async def test_delete_validates_the_body(client: httpx.AsyncClient, alice: LoggedIn,
                                         body: dict[str, Any], errcode: str) -> None:
    for path in ("/account/3pid/delete", "/account/3pid/unbind"):
        r = await client.post(f"{V3}{path}", json=body, headers=alice.headers)
        assert r.status_code == 400 and r.json()["errcode"] == errcode, path


@pytest.mark.parametrize("path", ["/account/3pid", "/account/3pid/add", "/account/3pid/bind",
                                  "/account/3pid/delete", "/account/3pid/unbind"])
async def test_account_endpoints_need_a_token(client: httpx.AsyncClient, path: str) -> None:
    r = await client.post(f"{V3}{path}", json={})
    assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    r = await client.get(f"{V3}/account/3pid")
    assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"


@pytest.mark.parametrize(("medium", "body"), [("email", EMAIL_BODY), ("msisdn", MSISDN_BODY)])
async def test_request_token_for_account(client: httpx.AsyncClient, medium: str,
                                         body: dict[str, Any]) -> None:
    r = await client.post(f"{V3}/account/3pid/{medium}/requestToken", json=body)
    assert r.status_code == 400
    assert r.json()["errcode"] == "M_THREEPID_MEDIUM_NOT_SUPPORTED"


@pytest.mark.parametrize("kind", ["register", "account/password"])
@pytest.mark.parametrize(("medium", "body"), [("email", EMAIL_BODY), ("msisdn", MSISDN_BODY)])
async def test_request_token_for_registration_and_reset(client: httpx.AsyncClient, kind: str,
                                                        medium: str,
                                                        body: dict[str, Any]) -> None:
    for prefix in (V3, R0):
        r = await client.post(f"{prefix}/{kind}/{medium}/requestToken", json=body)
        assert r.status_code == 403 and r.json()["errcode"] == "M_THREEPID_DENIED"


async def test_request_token_rejects_non_json(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{V3}/register/email/requestToken", content=b"{oops")
    assert r.status_code == 400 and r.json()["errcode"] == "M_NOT_JSON"
