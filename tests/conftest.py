"""Test-wide setup: no test may send DNS queries to the machine's resolver."""

from __future__ import annotations

from tests.support import nodns

nodns.install()
