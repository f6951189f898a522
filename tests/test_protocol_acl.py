"""Server ACLs (``m.room.server_acl``): the spec's order, globs, ports, IP literals."""

from __future__ import annotations

from typing import Any

import pytest

from conduwuit.protocol.acl import ServerAcl, glob_matches, host_of, is_ip_literal, server_allowed


def test_no_acl_allows_everyone() -> None:
    assert server_allowed(None, "evil.com")
    assert server_allowed(None, "1.2.3.4:8448")


def test_spec_example() -> None:
    # The spec's example event: everyone but evil.com and its subdomains, no IP literals.
    acl = {"allow": ["*"], "allow_ip_literals": False, "deny": ["*.evil.com", "evil.com"]}
    assert server_allowed(acl, "example.org")
    assert server_allowed(acl, "matrix.example.org:8448")
    for denied in ("evil.com", "evil.com:8448", "evil.com:1234", "sub.evil.com",
                   "a.b.evil.com:443", "1.2.3.4", "1.2.3.4:8448", "[::1]", "[2001:db8::1]:8448"):
        assert not server_allowed(acl, denied), denied
    assert server_allowed(acl, "notevil.com"), "a glob matches the whole name"


def test_deny_wins_over_allow() -> None:
    acl = {"allow": ["*.example.org", "bad.example.org"], "deny": ["bad.example.org"]}
    assert server_allowed(acl, "good.example.org")
    assert not server_allowed(acl, "bad.example.org")
    assert not server_allowed(acl, "example.org"), "'*.' needs at least the dot"


def test_missing_allow_denies_everyone() -> None:
    # The spec's warning: without an allow rule nobody may take part.
    assert not server_allowed({}, "example.org")
    assert not server_allowed({"deny": ["evil.com"]}, "example.org")
    assert not server_allowed({"allow": []}, "example.org")


def test_ports_are_ignored() -> None:
    acl = {"allow": ["example.org", "1.2.3.4", "[::1]"]}
    for name in ("example.org", "example.org:8448", "1.2.3.4:80", "[::1]", "[::1]:8448"):
        assert server_allowed(acl, name), name
    # A glob with a port matches nothing: names are compared without theirs.
    assert not server_allowed({"allow": ["example.org:8448"]}, "example.org:8448")


def test_ip_literals() -> None:
    allowed = {"allow": ["*"]}
    literals_off = {"allow": ["*"], "allow_ip_literals": False}
    for literal in ("127.0.0.1", "127.0.0.1:8448", "[::1]", "[fe80::1]:443"):
        assert server_allowed(allowed, literal), "allow_ip_literals defaults to true"
        assert not server_allowed(literals_off, literal)
    # Names that merely look numeric are not IPv4 literals.
    assert server_allowed(literals_off, "1.2.3.4.example")
    assert server_allowed(literals_off, "123")
    assert is_ip_literal("10.0.0.1") and is_ip_literal("[::]")
    assert not is_ip_literal("example.org") and not is_ip_literal("1.2.3")


def test_globs() -> None:
    assert glob_matches("*", "")
    assert glob_matches("*", "anything.at.all")
    assert glob_matches("?.org", "a.org") and not glob_matches("?.org", "ab.org")
    assert glob_matches("m*x.org", "matrix.org") and glob_matches("m*x.org", "mx.org")
    assert not glob_matches("m*x.org", "matrix.orgx")
    assert glob_matches("a**b", "ab") and glob_matches("*a*b*", "xxaxxbxx")
    # Regex metacharacters are literal.
    assert glob_matches("a.b", "a.b") and not glob_matches("a.b", "axb")
    assert glob_matches("[::1]", "[::1]") and not glob_matches("(a|b)", "a")
    # A pathological glob stays fast (no regex backtracking).
    assert not glob_matches("*a" * 40 + "b", "a" * 255)


def test_matching_is_case_insensitive() -> None:
    # The event schema: "The case-insensitive glob expressions".
    acl = {"allow": ["*.Example.ORG"], "deny": ["EVIL.example.org"]}
    assert server_allowed(acl, "matrix.example.org")
    assert server_allowed(acl, "MATRIX.EXAMPLE.ORG:8448")
    assert not server_allowed(acl, "evil.Example.org")


@pytest.mark.parametrize("content, name, expected", [
    # Malformed fields fall back to their defaults, one by one (as Synapse does).
    ({"allow": ["*"], "allow_ip_literals": "no"}, "1.2.3.4", True),
    ({"allow": ["*"], "allow_ip_literals": 0}, "1.2.3.4", True),
    ({"allow": "*"}, "example.org", False),
    ({"allow": ["*"], "deny": "example.org"}, "example.org", True),
    ({"allow": [1, None, {"a": 1}, "example.org"]}, "example.org", True),
    ({"allow": ["*"], "deny": [7, "example.org"]}, "example.org", False),
    ({"allow": {"example.org": True}}, "example.org", False),
])
def test_malformed_content(content: dict[str, Any], name: str, expected: bool) -> None:
    assert server_allowed(content, name) is expected


def test_content_that_is_not_an_object_is_ignored() -> None:
    assert server_allowed([], "example.org")  # type: ignore[arg-type]
    assert server_allowed("deny all", "example.org")  # type: ignore[arg-type]


def test_parsed_acl_and_hosts() -> None:
    acl = ServerAcl.from_content({"allow": ["*"], "deny": ["evil.com"], "allow_ip_literals": False})
    assert acl == ServerAcl(allow=("*",), deny=("evil.com",), allow_ip_literals=False)
    assert acl.allows("good.com") and not acl.allows("evil.com:1")
    assert host_of("example.org:8448") == "example.org"
    assert host_of("example.org") == "example.org"
    assert host_of("[2001:db8::1]:8448") == "[2001:db8::1]"
    assert host_of("1.2.3.4:80") == "1.2.3.4"
