"""Build a real Config the way an operator would: a TOML file plus overrides."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from conduwuit.config import Config, load_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def toml_value(value: Any) -> str:
    # JSON strings, numbers, booleans and arrays of them are valid TOML.
    return json.dumps(value)


def write_config(directory: Path, **options: Any) -> Path:
    """Write a config file with a [global] table (and nested tables for dict values)."""
    settings: dict[str, Any] = {
        "server_name": "test.local",
        "database_path": str(directory / "db"),
        "address": ["127.0.0.1"],
        "port": free_port(),
    }
    settings.update(options)
    lines = ["[global]"]
    tables: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            tables[key] = value
        elif value is not None:
            lines.append(f"{key} = {toml_value(value)}")
    for name, table in tables.items():
        lines.append(f"[global.{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in table.items())
    path = directory / "conduwuit.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_config(directory: Path, **options: Any) -> Config:
    return load_config(str(write_config(directory, **options)), env={}).config
