"""The committed option reference and example config must match their generators."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from conduwuit.config import (
    DOCS_PATH,
    EXAMPLE_PATH,
    OPTIONS,
    Config,
    docs_reference_section,
    load_config,
    render_example_toml,
    render_markdown,
)

REGENERATE = "out of date: run `python -m conduwuit.config --write`"


def test_docs_reference_is_generated() -> None:
    committed = docs_reference_section(DOCS_PATH.read_text("utf-8"))
    assert committed == render_markdown(), REGENERATE


def test_example_config_is_generated() -> None:
    assert EXAMPLE_PATH.read_text("utf-8") == render_example_toml(), REGENERATE


def test_every_option_is_documented() -> None:
    reference = render_markdown()
    example = render_example_toml()
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", reference, re.M))
    listed = set(re.findall(r"^#([a-z0-9_]+) =", example, re.M))
    names = {dotted.rpartition(".")[2] for dotted in OPTIONS}
    assert documented == names
    assert listed == names
    # conduwuit's 206 options plus our own keep_alive_timeout, the metrics listener's
    # allow_metrics, metrics_address and metrics_port, and appservice_registration_files.
    assert len(OPTIONS) == 211
    for dotted, attribute in OPTIONS.items():
        assert attribute.metadata["doc"].strip(), dotted


def test_example_sections_hold_the_right_options() -> None:
    section = "global"
    seen: dict[str, str] = {}
    for line in render_example_toml().splitlines():
        if header := re.fullmatch(r"\[(global(?:\.\w+)?)\]", line):
            section = header.group(1)
        elif option := re.match(r"#([a-z0-9_]+) =", line):
            seen[option.group(1)] = section
    for dotted in OPTIONS:
        table, _, name = dotted.rpartition(".")
        assert seen[name] == ("global." + table if table else "global"), dotted


def test_example_parses_and_gives_the_defaults(tmp_path: Path) -> None:
    text = EXAMPLE_PATH.read_text("utf-8")
    assert set(tomllib.loads(text)["global"]) == {"tls", "well_known", "blurhashing"}
    path = tmp_path / "conduwuit.toml"
    path.write_text(text.replace("[global]\n", '[global]\nserver_name = "example.com"\n', 1))
    loaded = load_config(str(path), env={})
    assert loaded.config == Config(server_name="example.com")
    assert [w for w in loaded.warnings if "database_path" not in w] == []


def test_uncommented_defaults_load_back_unchanged(tmp_path: Path) -> None:
    """Uncommenting every line that shows a concrete default changes nothing."""
    lines = []
    skip = ("=\n", "= varies by system\n")
    for line in render_example_toml().splitlines(keepends=True):
        is_option = re.match(r"#[a-z0-9_]+ = ", line) or re.match(r"#(    |\])", line)
        lines.append(line[1:] if is_option and not line.endswith(skip) else line)
    text = "".join(lines).replace("[global]\n", '[global]\nserver_name = "example.com"\n', 1)
    path = tmp_path / "all.toml"
    path.write_text(text, "utf-8")
    loaded = load_config(str(path), env={})
    assert loaded.config == Config(server_name="example.com")
