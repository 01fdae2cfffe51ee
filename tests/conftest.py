"""Shared fixtures. Each fixture keeps its machinery in its own module; this file only wires them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hotfolder.transfer import CHUNK_SIZE
from tests.browser import headless_chromium, missing_browser
from tests.missing import missing_server
from tests.postgres import PostgresServer, missing_reason, start_postgres
from tests.rgw import RGWServer, missing_binaries, start_rgw


@pytest.fixture(scope="session")
def rgw() -> Iterator[RGWServer]:
    """A real Ceph RGW on 127.0.0.1 with one user and one bucket, for the whole session.

    Skipped where Ceph is not installed (run .ci/install-rgw), except under CI=true, where a
    missing server must fail the run: CI never silently skips the S3 tests.
    """
    missing = missing_binaries()
    if missing:
        missing_server(f"Ceph RGW not installed (missing {', '.join(missing)}); run .ci/install-rgw")
    server = start_rgw()
    try:
        yield server
    finally:
        server.stop()




# Shared by the presigned PUT and POST tests against RGW.
@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c

@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    path.write_bytes(os.urandom(3 * CHUNK_SIZE + 1234))  # several chunks, not a multiple of one
    return path


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster on 127.0.0.1 for the whole session (``tests/postgres.py``).

    Skipped where PostgreSQL is not installed (run .ci/install-postgres), except under CI=true, where
    a missing server must fail the run.
    """
    reason = missing_reason()
    if reason is not None:
        missing_server(reason)
    server = start_postgres()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """The URL of a database of this test's own on the session's PostgreSQL (password included)."""
    return postgres.url(postgres.create_database())


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """Debian's headless Chromium under Selenium, one per test module (a fresh profile each).

    Skipped where it is not installed (run .ci/install-browser), except under CI=true: CI never skips
    the browser tests."""
    missing = missing_browser()
    if missing:
        missing_server(f"{' and '.join(missing)} not installed; run .ci/install-browser")
    with headless_chromium() as driver:
        yield driver
