"""Loading and checking the configuration: sources, env rules, validation, refusals."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from conduwuit.config import (
    EMBEDDED_DEFAULT,
    OPTIONS,
    Config,
    ConfigError,
    LoadedConfig,
    ProxyConfig,
    ProxyRule,
    check_config,
    cpu_count,
    is_valid_server_name,
    load_config,
    running_in_container,
)


def write(tmp_path: Path, text: str, name: str = "conduwuit.toml") -> str:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    return str(path)


def minimal(tmp_path: Path, extra: str = "") -> str:
    return write(
        tmp_path,
        f'[global]\nserver_name = "example.com"\ndatabase_path = "{tmp_path}/db"\n{extra}',
    )


def load(
    tmp_path: Path,
    extra: str = "",
    *,
    env: dict[str, str] | None = None,
    overrides: Sequence[str] = (),
) -> LoadedConfig:
    return load_config(minimal(tmp_path, extra), env=env or {}, overrides=overrides)


def one_line(error: pytest.ExceptionInfo[ConfigError]) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


# --- sources ---------------------------------------------------------------------------


def test_embedded_default() -> None:
    loaded = load_config(env={})
    config = loaded.config
    assert loaded.source == EMBEDDED_DEFAULT
    assert loaded.warnings == []
    assert config.server_name == "localhost"
    assert config.database_path == "./conduwuit-db"
    assert config.address == ["127.0.0.1", "::1"]
    assert config.port == [6167]
    # everything else is conduwuit's default
    assert config.allow_registration is False
    assert config.trusted_servers == ["matrix.org"]
    assert config.client_request_timeout == 180
    assert config.default_room_version == "12"  # the spec recommends 12 for new rooms
    assert config.well_known.client is None
    assert config.blurhashing.components_x == 4
    assert check_config(config, in_container=False) == []


def test_varies_by_system_defaults_follow_cpu_count() -> None:
    config = load_config(env={}).config
    cpus = cpu_count()
    assert config.db_cache_capacity_mb == 128.0 + 64.0 * cpus
    assert config.db_write_buffer_capacity_mb == 48.0 + 4.0 * cpus
    assert config.pdu_cache_capacity == 100_000 + 10_000 * cpus
    assert config.db_pool_workers == min(1024, max(32, 4 * cpus))
    assert config.rocksdb_parallelism_threads == cpus


def test_file_load(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        'port = 8448\nallow_registration = false\ntrusted_servers = ["a.org", "b.org"]\n'
        "[global.well_known]\nserver = \"matrix.example.com:443\"\n"
        "[global.tls]\ncerts = \"/c.pem\"\nkey = \"/k.pem\"\n"
        "[global.blurhashing]\ncomponents_x = 5\n",
    )
    config = loaded.config
    assert loaded.source == str(tmp_path / "conduwuit.toml")
    assert loaded.warnings == []
    assert config.server_name == "example.com"
    assert config.database_path == f"{tmp_path}/db"
    assert config.port == [8448]
    assert config.trusted_servers == ["a.org", "b.org"]
    assert config.well_known.server == "matrix.example.com:443"
    assert config.tls.certs == "/c.pem"
    assert config.tls.key == "/k.pem"
    assert config.blurhashing.components_x == 5
    assert loaded.explicit >= {"port", "tls.certs", "well_known.server"}


def test_conduwuit_config_env_names_the_file(tmp_path: Path) -> None:
    path = minimal(tmp_path, "port = 9000\n")
    loaded = load_config(env={"CONDUWUIT_CONFIG": path})
    assert loaded.source == path
    assert loaded.config.port == [9000]
    assert loaded.warnings == []  # CONDUWUIT_CONFIG itself is not an unknown option


def test_conduit_config_env_is_the_fallback(tmp_path: Path) -> None:
    path = minimal(tmp_path)
    other = write(tmp_path, '[global]\nserver_name = "other.org"\n', "other.toml")
    assert load_config(env={"CONDUIT_CONFIG": path}).source == path
    both = {"CONDUIT_CONFIG": other, "CONDUWUIT_CONFIG": path}
    assert load_config(env=both).source == path
    assert load_config(other, env=both).source == other  # -c wins over the env


def test_missing_server_name_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[global]\ndatabase_path = "/x"\n')
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert f"server_name is required in {path}" in one_line(e)


def test_server_name_outside_global_gets_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path, 'server_name = "example.com"\n')
    with pytest.raises(ConfigError, match=r"inside the \[global\] table"):
        load_config(path, env={})


def test_server_name_from_env_satisfies_a_file_without_it(tmp_path: Path) -> None:
    path = write(tmp_path, '[global]\ndatabase_path = "/x"\n')
    loaded = load_config(path, env={"CONDUWUIT_SERVER_NAME": "example.com"})
    assert loaded.config.server_name == "example.com"


def test_missing_database_path_warns(tmp_path: Path) -> None:
    path = write(tmp_path, '[global]\nserver_name = "example.com"\n')
    loaded = load_config(path, env={})
    assert loaded.config.database_path == "./conduwuit-db"
    assert any("database_path is not set" in w for w in loaded.warnings)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(str(tmp_path / "nope.toml"), env={})
    assert "cannot read config file" in one_line(e)
    assert "nope.toml" in str(e.value)


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[global]\nserver_name = "example.com\nport = \n')
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert one_line(e).startswith(f"cannot parse config file {path}:")


# --- environment and -O ------------------------------------------------------------------


def test_env_override(tmp_path: Path) -> None:
    env = {
        "CONDUWUIT_PORT": "8448",
        "CONDUWUIT_ALLOW_REGISTRATION": "true",
        "CONDUWUIT_SERVER_NAME": "env.example.com",
        "conduwuit_log": "debug",  # key names are case-insensitive
    }
    config = load(tmp_path, env=env).config
    assert config.port == [8448]
    assert config.allow_registration is True
    assert config.server_name == "env.example.com"
    assert config.log == "debug"


def test_nested_env(tmp_path: Path) -> None:
    env = {
        "CONDUWUIT_WELL_KNOWN__CLIENT": "https://matrix.example.com",
        "CONDUWUIT_TLS__DUAL_PROTOCOL": "true",
        "CONDUWUIT_BLURHASHING__COMPONENTS_Y": "2",
    }
    config = load(tmp_path, env=env).config
    assert config.well_known.client == "https://matrix.example.com"
    assert config.tls.dual_protocol is True
    assert config.blurhashing.components_y == 2


def test_list_env(tmp_path: Path) -> None:
    env = {
        "CONDUWUIT_TRUSTED_SERVERS": '["matrix.org"]',
        "CONDUWUIT_ADDRESS": '["0.0.0.0", "::"]',
        "CONDUWUIT_PORT": "[8008, 8448]",
    }
    config = load(tmp_path, 'trusted_servers = ["a.org", "b.org"]', env=env).config
    assert config.trusted_servers == ["matrix.org"]
    assert config.address == ["0.0.0.0", "::"]
    assert config.port == [8008, 8448]


def test_env_text_for_string_options_stays_text(tmp_path: Path) -> None:
    env = {
        "CONDUWUIT_REGISTRATION_TOKEN": "12345",
        "CONDUWUIT_ADDRESS": "0.0.0.0",
        "CONDUWUIT_DEFAULT_ROOM_VERSION": "10",
        "CONDUWUIT_EMERGENCY_PASSWORD": '"quoted"',
    }
    config = load(tmp_path, env=env).config
    assert config.registration_token == "12345"
    assert config.address == ["0.0.0.0"]
    assert config.default_room_version == "10"
    assert config.emergency_password == "quoted"


def test_legacy_conduit_env_and_precedence(tmp_path: Path) -> None:
    config = load(tmp_path, "port = 1000", env={"CONDUIT_PORT": "2000"}).config
    assert config.port == [2000]
    both = {"CONDUIT_PORT": "2000", "CONDUWUIT_PORT": "3000"}
    assert load(tmp_path, "port = 1000", env=both).config.port == [3000]


def test_overrides(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        "port = 1000",
        env={"CONDUWUIT_PORT": "2000"},
        overrides=[
            "port=4000",
            "well_known.client=https://m.example.com",
            "global.allow_federation=false",
            'server_name="o.example.com"',
        ],
    )
    config = loaded.config
    assert config.port == [4000]  # -O wins over env and file
    assert config.well_known.client == "https://m.example.com"
    assert config.allow_federation is False
    assert config.server_name == "o.example.com"


def test_bad_override_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected key=value"):
        load(tmp_path, overrides=["port"])


def test_whole_subtable_and_proxy_from_env(tmp_path: Path) -> None:
    env = {
        "CONDUWUIT_TLS": '{ certs = "/c", key = "/k" }',
        "CONDUWUIT_PROXY": '{ global = { url = "socks5h://localhost:9050" } }',
    }
    config = load(tmp_path, env=env).config
    assert (config.tls.certs, config.tls.key) == ("/c", "/k")
    assert config.proxy == ProxyConfig(global_url="socks5h://localhost:9050")


def test_proxy_by_domain_table(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[[global.proxy.by_domain]]\nurl = "socks5h://tor:9050"\ninclude = ["*.onion"]\n',
    ).config
    assert config.proxy == ProxyConfig(by_domain=(ProxyRule("socks5h://tor:9050", ("*.onion",)),))
    assert load(tmp_path, 'proxy = "none"').config.proxy == ProxyConfig()


# --- aliases, unknown and deprecated keys ------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "target", "value"),
    [
        ("allow_announcements_check", "allow_check_for_updates", True),
        ("conduit_cache_capacity_modifier", "cache_capacity_modifier", 2.0),
        (
            "allow_profile_lookup_federation_requests",
            "allow_inbound_profile_lookup_federation_requests",
            False,
        ),
        ("log_colours", "log_colors", False),
    ],
)
def test_alias_keys(tmp_path: Path, alias: str, target: str, value: object) -> None:
    text = "true" if value is True else "false" if value is False else repr(value)
    loaded = load(tmp_path, f"{alias} = {text}")
    assert getattr(loaded.config, target) == value
    assert loaded.warnings == []
    env_loaded = load(tmp_path, env={f"CONDUWUIT_{alias.upper()}": text})
    assert getattr(env_loaded.config, target) == value


def test_unknown_keys_warn_once_each_naming_key_and_source(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        "bogus_option = 1\n[global.tls]\nbogus_tls = 2\n[global.nonsense]\nx = 1\n",
        env={"CONDUWUIT_NOT_AN_OPTION": "x"},
    )
    warnings = loaded.warnings
    path = str(tmp_path / "conduwuit.toml")
    assert len(warnings) == 4
    assert any("'bogus_option'" in w and path in w for w in warnings)
    assert any("'tls.bogus_tls'" in w for w in warnings)
    assert any("'nonsense'" in w for w in warnings)
    assert any("'not_an_option'" in w and "CONDUWUIT_NOT_AN_OPTION" in w for w in warnings)


def test_unknown_top_level_keys_warn(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 1\n[global]\nserver_name = "example.com"\n[other]\n')
    warnings = load_config(path, env={}).warnings
    assert any("top-level key 'port'" in w for w in warnings)
    assert any("top-level table 'other'" in w for w in warnings)


def test_deprecated_keys(tmp_path: Path) -> None:
    loaded = load(tmp_path, 'cache_capacity = 5\nwell_known_client = "https://m.example.com"\n')
    assert loaded.config.well_known.client == "https://m.example.com"
    assert any("'cache_capacity'" in w and "deprecated" in w for w in loaded.warnings)
    assert any("'well_known_client'" in w and "well_known.client" in w for w in loaded.warnings)


def test_rocksdb_options_note_only_when_set(tmp_path: Path) -> None:
    assert load(tmp_path).warnings == []
    loaded = load(tmp_path, "rocksdb_direct_io = false\nrocksdb_repair = true\n")
    assert loaded.warnings == ["'rocksdb_direct_io' has no effect with the LevelDB store"]
    assert loaded.config.rocksdb_repair is True
    algo = load(tmp_path, 'rocksdb_compression_algo = "lz4"')
    assert any("snappy" in w for w in algo.warnings)
    assert algo.config.leveldb_options()["compression"] == "snappy"
    none = load(tmp_path, 'rocksdb_compression_algo = "none"')
    assert none.warnings == []
    assert none.config.leveldb_options()["compression"] is None


def test_leveldb_options_mapping(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "db_cache_capacity_mb = 64\ndb_write_buffer_capacity_mb = 8.5\n"
        "rocksdb_paranoid_file_checks = true\n",
    ).config
    assert config.leveldb_options() == {
        "lru_cache_size": 64 * 1024 * 1024,
        "write_buffer_size": int(8.5 * 1024 * 1024),
        "paranoid_checks": True,
        "compression": "snappy",
    }


# --- value validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "key", "shown"),
    [
        ('port = "abc"', "port", '"abc"'),
        ("port = 70000", "port", "70000"),
        ("port = [8008, 0]", "port", "[8008, 0]"),
        ('allow_registration = "maybe"', "allow_registration", '"maybe"'),
        ("allow_registration = 1", "allow_registration", "1"),
        ("request_timeout = -5", "request_timeout", "-5"),
        ("dns_attempts = 1.5", "dns_attempts", "1.5"),
        ("ip_lookup_strategy = 9", "ip_lookup_strategy", "9"),
        ('rocksdb_compression_algo = "brotli"', "rocksdb_compression_algo", '"brotli"'),
        ('address = "not-an-ip"', "address", '"not-an-ip"'),
        ("trusted_servers = \"matrix.org\"", "trusted_servers", '"matrix.org"'),
        ('forbidden_usernames = ["b[a"]', "forbidden_usernames", '["b[a"]'),
        ('ip_range_denylist = ["10.0.0.0/33"]', "ip_range_denylist", '["10.0.0.0/33"]'),
        ("unix_socket_perms = 668", "unix_socket_perms", "668"),
        ("cache_capacity_modifier = -1.0", "cache_capacity_modifier", "-1.0"),
        ('proxy = "sometimes"', "proxy", '"sometimes"'),
    ],
)
def test_invalid_values(tmp_path: Path, line: str, key: str, shown: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, line)
    message = one_line(e)
    assert message.startswith(f"invalid value for '{key}': {shown} (expected ")
    assert str(tmp_path / "conduwuit.toml") in message
    assert e.value.key == key


def test_invalid_port_message_is_exact(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, env={"CONDUWUIT_PORT": "abc"})
    assert str(e.value) == (
        "invalid value for 'port': \"abc\" (expected an integer 1-65535 or a list of them) "
        "from environment variable CONDUWUIT_PORT"
    )


def test_invalid_nested_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"invalid value for 'blurhashing.components_x': 12"):
        load(tmp_path, "[global.blurhashing]\ncomponents_x = 12\n")
    with pytest.raises(ConfigError, match=r"invalid value for 'tls': 5 \(expected a table"):
        load(tmp_path, "tls = 5")


def test_log_level_is_not_checked_here(tmp_path: Path) -> None:
    assert load(tmp_path, 'log = "garbage,,="').config.log == "garbage,,="


def test_every_option_accepts_its_own_default(tmp_path: Path) -> None:
    """The example config's defaults must load back unchanged (no default fails its kind)."""
    for dotted, attribute in OPTIONS.items():
        kind = attribute.metadata["kind"]
        default = attribute.default
        factory = getattr(default, "factory", None)
        value = factory() if callable(factory) else default
        if value is None or value is attrs.NOTHING or isinstance(value, ProxyConfig):
            continue
        assert kind.convert(value) == value, dotted


# --- address, port, listeners --------------------------------------------------------


def test_address_and_port_string_or_list(tmp_path: Path) -> None:
    config = load(tmp_path, 'address = "0.0.0.0"\nport = 8448').config
    assert config.address == ["0.0.0.0"]
    assert config.port == [8448]
    assert config.listen_addresses() == [("0.0.0.0", 8448)]
    config = load(tmp_path, 'address = ["127.0.0.1", "[::1]"]\nport = [80, 443]').config
    assert config.address == ["127.0.0.1", "::1"]
    assert config.listen_addresses() == [
        ("127.0.0.1", 80),
        ("127.0.0.1", 443),
        ("::1", 80),
        ("::1", 443),
    ]


def test_unix_socket_alone_replaces_default_addresses(tmp_path: Path) -> None:
    config = load(tmp_path, 'unix_socket_path = "/run/c.sock"').config
    assert config.address == []
    assert config.listen_addresses() == []
    assert check_config(config, in_container=False) == []
    both = load(tmp_path, 'unix_socket_path = "/run/c.sock"\naddress = "127.0.0.1"').config
    assert both.listen_addresses() == [("127.0.0.1", 8008)]
    check_config(both, in_container=False)  # both at once is fine
    assert both.unix_socket_mode == 0o660


def test_no_listeners_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        check_config(load(tmp_path, "address = []").config, in_container=False)
    assert "nothing to listen on" in one_line(e)
    with pytest.raises(ConfigError, match="'port' is empty"):
        check_config(load(tmp_path, "port = []").config, in_container=False)
    not_listening = load(tmp_path, "address = []\nlistening = false").config
    check_config(not_listening, in_container=False)


# --- check_config --------------------------------------------------------------------


def test_open_registration_refused(tmp_path: Path) -> None:
    config = load(tmp_path, "allow_registration = true").config
    with pytest.raises(ConfigError) as e:
        check_config(config, in_container=False)
    message = one_line(e)
    assert "registration_token" in message
    assert "registration_token_file" in message
    assert "yes_i_am_very_very_sure_i_want_an_open_registration_server_prone_to_abuse" in message


def test_registration_with_token_is_allowed(tmp_path: Path) -> None:
    config = load(tmp_path, 'allow_registration = true\nregistration_token = "s3cret"').config
    assert check_config(config, in_container=False) == []


def test_registration_with_token_file_is_allowed(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("one two\n")
    config = load(
        tmp_path, f'allow_registration = true\nregistration_token_file = "{token_file}"'
    ).config
    assert check_config(config, in_container=False) == []
    token_file.write_text("  \n")
    with pytest.raises(ConfigError, match="is empty"):
        check_config(config, in_container=False)
    token_file.unlink()
    with pytest.raises(ConfigError, match="cannot read registration_token_file"):
        check_config(config, in_container=False)


def test_open_registration_with_the_long_key(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "allow_registration = true\n"
        "yes_i_am_very_very_sure_i_want_an_open_registration_server_prone_to_abuse = true",
    ).config
    warnings = check_config(config, in_container=False)
    assert any("open registration" in w for w in warnings)


@pytest.mark.parametrize(
    "name",
    ["example.com", "localhost", "example.com:8448", "1.2.3.4", "1.2.3.4:80", "[::1]",
     "[2001:db8::1]:8448", "a-b.example"],
)
def test_valid_server_names(name: str) -> None:
    assert is_valid_server_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "exa mple.com", "example.com:", "example.com:99999", "::1", "[::1", "[nope]",
     "example..com", "-bad.com", "ex_ample.com", "example.com:80:80", "https://example.com"],
)
def test_invalid_server_names(tmp_path: Path, name: str) -> None:
    assert not is_valid_server_name(name)
    config = attrs.evolve(load(tmp_path).config, server_name=name)
    with pytest.raises(ConfigError) as e:
        check_config(config, in_container=False)
    assert one_line(e).startswith("invalid value for 'server_name'")


def test_other_refusals(tmp_path: Path) -> None:
    base = load(tmp_path).config
    cases: list[dict[str, Any]] = [
        {"default_room_version": "99"},
        {"max_request_size": 1000},
        {"allow_local_presence": False},
        {"registration_token": ""},
        {"emergency_password": ""},
        {"server_name": "your.server.name"},
    ]
    for change in cases:
        with pytest.raises(ConfigError):
            check_config(attrs.evolve(base, **change), in_container=False)
    tls_half = attrs.evolve(base, tls=attrs.evolve(base.tls, certs="/c.pem"))
    with pytest.raises(ConfigError, match=r"tls\.key"):
        check_config(tls_half, in_container=False)


def test_container_warning(tmp_path: Path) -> None:
    config = load(tmp_path).config
    warnings = check_config(config, in_container=True)
    assert len(warnings) == 1
    assert "container" in warnings[0]
    assert "won't reach" in warnings[0]
    assert check_config(config, in_container=False) == []
    public = load(tmp_path, 'address = ["127.0.0.1", "0.0.0.0"]').config
    assert check_config(public, in_container=True) == []


def test_container_detection_is_injectable(tmp_path: Path) -> None:
    marker = tmp_path / ".dockerenv"
    assert not running_in_container({}, markers=[str(marker)])
    assert running_in_container({"container": "podman"}, markers=[])
    marker.touch()
    assert running_in_container({}, markers=[str(marker)])


def test_config_can_be_built_directly() -> None:
    config = Config(server_name="example.com")
    assert config.port == [8008]
    assert config.database_path == "./conduwuit-db"
    assert config.listen_addresses() == [("127.0.0.1", 8008), ("::1", 8008)]
    assert config.cache_capacity("pdu_cache_capacity") == config.pdu_cache_capacity
