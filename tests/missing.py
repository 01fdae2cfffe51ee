"""One rule for a test whose real server is not installed here: skip it with the reason, except in CI,
where a missing server is an error (CI installs every server and never skips their tests)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def missing_server(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"CI is set, so a missing server is an error: {reason}", pytrace=False)
    pytest.skip(reason)
