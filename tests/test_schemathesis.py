"""Property-based requests generated from the spec's own OpenAPI files (schemathesis).

A real server process is started: schemathesis' HTTP calls are synchronous, and run
against an in-process Trio server they would block the very loop that has to answer
them. Each spec file below becomes one test, parametrized by schemathesis over the
file's operations; every operation gets the spec's examples, schemathesis' coverage
cases (each field missing, mistyped, at its bounds) and random valid and invalid
cases, sent with a real access token (one case in five keeps the credentials
schemathesis made up, for the 401 paths). Every response must pass:

* ``not_a_server_error``: no 5xx, ever;
* :func:`matrix_error_body`: every 4xx body is a Matrix error (a JSON object with an
  ``M_`` ``errcode`` and an ``error`` string), or a UIA 401 challenge;
* :func:`schema_conformance`: the body matches the spec's schema for its status.

Generated ids mostly point at nothing; to reach the handlers' real work, cases are
aimed (see :func:`aim`) at the ids of the test's own user, device, filter and room,
and UIA, login and refresh bodies get working credentials.

Runs are deterministic (``derandomize``) and small (:data:`MAX_EXAMPLES`). For a longer
hunt: ``SCHEMATHESIS_MAX_EXAMPLES=300 SCHEMATHESIS_SEED=7 pytest tests/test_schemathesis.py``.
``MATRIX_SPEC_DIR`` points at a matrix-spec checkout (default: /work/shared/spec).
"""

from __future__ import annotations

import os
import signal
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import attrs
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckContext, CheckFunction
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.support.config import free_port, write_config
from tests.support.process import ServerProcess

pytestmark = pytest.mark.slow

SPEC_DIR = Path(os.environ.get("MATRIX_SPEC_DIR", "/work/shared/spec")) / "data/api/client-server"
if not SPEC_DIR.is_dir():
    pytest.skip(f"no Matrix spec at {SPEC_DIR} (set MATRIX_SPEC_DIR)", allow_module_level=True)

# Every client-server spec file whose operations this server routes: accounts, rooms,
# sync, keys, media, push, VoIP, appservices. Left out: OAuth server metadata, SSO
# redirects and the policy server (not served here) and definitions (not operations).
SPEC_FILES = (
    "registration", "registration_tokens", "login", "logout", "refresh", "login_token",
    "whoami", "password_management", "account_deactivation", "device_management",
    "profile", "account-data", "tags", "filter", "capabilities", "administrative_contact",
    "versions", "wellknown", "support",
    "pushrules", "pusher", "notifications", "voip", "appservice_ping",
    "appservice_room_directory",
    "receipts", "typing", "presence", "read_markers", "redaction", "room_state", "room_send",
    "message_pagination", "relations", "threads_list", "search", "sync", "to_device", "keys",
    "cross_signing", "key_backup", "directory", "list_public_rooms", "create_room", "joining",
    "leaving", "inviting", "kicking", "banning", "knocking", "room_upgrades", "report_content",
    "room_summary", "space_hierarchy", "event_context", "room_event_by_timestamp", "users",
    "mutual_rooms", "third_party_lookup", "openid", "old_sync", "room_initial_sync",
    "peeking_events", "rooms", "content-repo", "authed-content-repo", "admin",
    "third_party_membership", "list_joined_rooms",
)

# Random cases per operation, on top of the spec's examples and the coverage cases.
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "6"))
# A seed turns derandomize off, so that each seed explores other cases.
SEED = os.environ.get("SCHEMATHESIS_SEED")

# Operations that end the session they are called with: each case gets a fresh device of
# a user of their own ("disposable"). DELETE /devices/{deviceId} joins them when a case
# is given the password (see aim()), since it then deletes its own device.
LOGS_OUT = frozenset({"POST /logout", "POST /logout/all"})
# Operations that run as a second user ("throwaway", one session for the whole run):
# password changes and deactivation (never given the real password, but they must not
# endanger the main user even so) and the UIA operations given the real password.
AS_THROWAWAY = frozenset({
    "POST /account/password", "POST /account/deactivate", "POST /login/get_token",
    "POST /delete_devices", "DELETE /devices/{deviceId}",
})
# UIA-protected operations whose cases get the throwaway user's real password.
UIA_WITH_PASSWORD = frozenset({
    "POST /login/get_token", "POST /delete_devices", "DELETE /devices/{deviceId}",
})

REGISTRATION_TOKEN = "schemathesis-token"
PASSWORD = "schemathesis password"
ROOM_ID = "!schemathesis:test.local"
V3 = "/_matrix/client/v3"


@attrs.frozen
class Account:
    user_id: str
    device_id: str
    access_token: str


@attrs.define
class Target:
    base: str  # http://127.0.0.1:PORT
    http: requests.Session
    main: Account  # whose token most requests carry
    throwaway: Account  # see AS_THROWAWAY
    disposable: str  # user id of the fresh sessions, see LOGS_OUT
    filter_id: str

    def post(self, path: str, body: dict[str, Any], token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = self.http.post(self.base + path, json=body, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def register(self, username: str) -> Account:
        reply = self.post(f"{V3}/register", {
            "username": username, "password": PASSWORD, "auth": {"type": "m.login.dummy"},
            "initial_device_display_name": "schemathesis"})
        return Account(reply["user_id"], reply["device_id"], reply["access_token"])

    def login(self, *, refresh_token: bool = False) -> dict[str, Any]:
        reply: dict[str, Any] = self.post(f"{V3}/login", {
            "type": "m.login.password", "password": PASSWORD, "refresh_token": refresh_token,
            "identifier": {"type": "m.id.user", "user": self.disposable}})
        return reply

    def fresh_session(self) -> Account:
        reply = self.login()
        return Account(reply["user_id"], reply["device_id"], reply["access_token"])


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    workdir = tmp_path_factory.mktemp("schemathesis")
    port = free_port()
    config = write_config(
        workdir, port=port, allow_registration=True, registration_token=REGISTRATION_TOKEN,
        yes_i_am_very_very_sure_i_want_an_open_registration_server_prone_to_abuse=True,
        allow_guest_registration=True,
        # With TURN configured /voip/turnServer answers the spec's full object (without it,
        # `{}` as clients expect: tests/test_turn.py).
        turn_uris=["turn:turn.test.local?transport=udp"], turn_secret="schemathesis",
        # Generated user ids name random servers; this test is about the client API and
        # must not wait on DNS: remote profiles are refused at once (403).
        allow_federation=False,
        # Without these the well-known endpoints only ever answer 404.
        well_known={"client": "https://matrix.test.local", "support_email": "admin@test.local",
                    "support_page": "https://test.local/help"},
    )
    server = ServerProcess(workdir, ["-c", str(config)], module="conduwuit")
    try:
        server.wait_for("READY=1")
        with requests.Session() as http:
            nobody = Account("", "", "")
            target = Target(f"http://127.0.0.1:{port}", http, nobody, nobody, "", "")
            target.main = target.register("schemathesis")
            target.throwaway = target.register("throwaway")
            target.disposable = target.register("disposable").user_id
            target.filter_id = target.post(
                f"{V3}/user/{quote(target.main.user_id)}/filter",
                {"room": {"timeline": {"limit": 10}}}, target.main.access_token)["filter_id"]
            yield target
        server.signal(signal.SIGTERM)
        assert server.wait() == 0, server.log()
        assert "Traceback" not in server.log(), server.log()
    finally:
        server.close()


# ---------------------------------------------------------------------- checks


def matrix_error_body(ctx: CheckContext, response: schemathesis.Response,
                      case: Case[Any]) -> bool | None:
    """Every 4xx is the spec's error JSON; a 401 may instead be a UIA challenge."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), (
        f"{response.status_code} answered with content type {content_type!r}")
    body = response.json()
    assert isinstance(body, dict), f"error body is not a JSON object: {body!r}"
    if response.status_code == 401 and "flows" in body:
        # User-interactive authentication: flows, a session and params; errcode optional.
        flows = body["flows"]
        assert isinstance(flows, list) and flows, body
        assert all(isinstance(f, dict) and isinstance(f.get("stages"), list) for f in flows), body
        assert isinstance(body.get("session"), str), body
        assert isinstance(body.get("params"), dict), body
        if "errcode" not in body:
            return None
    errcode, error = body.get("errcode"), body.get("error")
    assert isinstance(errcode, str) and errcode.startswith("M_"), f"bad errcode in {body!r}"
    assert isinstance(error, str), f"bad error in {body!r}"
    return None


TOKEN_ERRORS = frozenset({"M_MISSING_TOKEN", "M_UNKNOWN_TOKEN"})


def schema_conformance(ctx: CheckContext, response: schemathesis.Response,
                       case: Case[Any]) -> bool | None:
    """``response_schema_conformance``, except for the access-token 401s.

    The spec lets every authenticated endpoint answer 401 ``M_MISSING_TOKEN`` or
    ``M_UNKNOWN_TOKEN`` ("Using access tokens"), but the files of endpoints behind UIA
    document their 401 only as the UIA challenge, which such an error cannot match.
    """
    if response.status_code == 401:
        body = response.json()
        if isinstance(body, dict) and body.get("errcode") in TOKEN_ERRORS:
            return None
    return response_schema_conformance(ctx, response, case)


# ------------------------------------------------------------------ the cases


def one_in(n: int, *values: object) -> bool:
    """A fixed pseudo-random choice from a case's generated values (shrinking stays exact)."""
    return zlib.crc32(repr(values).encode()) % n == 0


def aim(case: Case[Any], target: Target) -> Account:
    """Point a generated case at what exists here; returns the account it acts as."""
    label = case.operation.label
    body = case.body
    auth = body.get("auth") if isinstance(body, dict) else None
    # Half the auth dicts (and all m.login.password ones) complete UIA.
    with_password = (label in UIA_WITH_PASSWORD and isinstance(auth, dict)
                     and (auth.get("type") == "m.login.password" or one_in(2, sorted(auth))))
    if label in LOGS_OUT or (with_password and label == "DELETE /devices/{deviceId}"):
        account = target.fresh_session()
    elif label in AS_THROWAWAY:
        account = target.throwaway
    else:
        account = target.main
    known = {"userId": account.user_id, "deviceId": account.device_id,
             "filterId": target.filter_id, "roomId": ROOM_ID}
    params = case.path_parameters
    # One case in four keeps its generated ids: other users, unknown devices.
    if params and not one_in(4, sorted(params.items())):
        case.path_parameters = {name: quote(known[name], safe="") if name in known else value
                                for name, value in params.items()}
    if not isinstance(body, dict):
        return account
    if with_password:
        case.body = {**body, "auth": {
            "type": "m.login.password", "password": PASSWORD,
            "identifier": {"type": "m.id.user", "user": account.user_id}}}
    elif label == "PUT /profile/{userId}/{keyName}" and body:
        # The body must be keyed by the field named in the path; keep the generated value.
        case.body = {unquote(case.path_parameters["keyName"]): next(iter(body.values()))}
    elif (label == "POST /login" and body.get("type") == "m.login.password"
          and one_in(2, body)):
        # Half the password logins succeed (each costs a password hash check).
        case.body = {**body, "password": PASSWORD,
                     "identifier": {"type": "m.id.user", "user": target.disposable}}
    elif label == "POST /refresh" and isinstance(body.get("refresh_token"), str):
        case.body = {**body, "refresh_token": target.login(refresh_token=True)["refresh_token"]}
    return account


def run_case(case: Case[Any], target: Target, base_path: str) -> None:
    account = aim(case, target)
    headers = {}
    # One case in five keeps the credentials schemathesis generated (none, empty or
    # garbage) for the 401 paths; the rest carry a real token.
    if not one_in(5, case.headers, case.query):
        headers["Authorization"] = f"Bearer {account.access_token}"
    checks: list[CheckFunction] = [not_a_server_error, matrix_error_body, schema_conformance]
    response = case.call(base_url=target.base + base_path, session=target.http,
                         headers=headers, timeout=30)
    case.validate_response(response, checks=checks, headers=headers)


def config_for(name: str) -> schemathesis.Config:
    # The coverage phase also sends undocumented methods and expects 405; one is enough
    # (OPTIONS is answered for every path, as CORS preflights must be).
    coverage: dict[str, Any] = {"unexpected-methods": ["patch"]}
    if name == "filter":
        # The filter schema nests deep: its negative coverage cases (each field of each
        # level mistyped) are ~550 requests, a third of the whole run. Filter validation
        # has its own tests (tests/test_filters.py); random invalid filters still run.
        # (Set for the whole file: an [[operations]] entry limited to POST leaks into
        # every operation in schemathesis 4.32.)
        coverage["generation"] = {"mode": "positive"}
    return schemathesis.Config.from_dict({"phases": {"coverage": coverage}})


def spec_test(name: str) -> Callable[..., None]:
    # from_path keeps the file's location, so its relative $refs resolve.
    schema = schemathesis.openapi.from_path(SPEC_DIR / f"{name}.yaml", config=config_for(name))
    # The servers entry is {protocol}://{hostname}{basePath}; only basePath is ours.
    base_path = schema.raw_schema["servers"][0]["variables"]["basePath"]["default"]

    def test(case: Case[Any], target: Target) -> None:
        run_case(case, target, base_path)

    test.__name__ = test.__qualname__ = f"test_{name.replace('-', '_')}"
    if SEED is not None:
        test = hypothesis.seed(int(SEED))(test)
    test = settings(max_examples=MAX_EXAMPLES, derandomize=SEED is None, database=None,
                    deadline=None, suppress_health_check=list(HealthCheck))(test)
    parametrized: Callable[..., None] = schema.parametrize()(test)
    return parametrized


for _name in SPEC_FILES:
    _test = spec_test(_name)
    globals()[_test.__name__] = _test
