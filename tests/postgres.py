"""A real PostgreSQL on 127.0.0.1 for the tests: a private cluster made by ``initdb`` in a temporary folder.

Why a real server: what the shared journal relies on (row locks, ``FOR UPDATE SKIP LOCKED``, advisory
locks, a connection cut by ``pg_terminate_backend``, a restart) is the server's own behaviour.

The cluster belongs to an unprivileged user (PostgreSQL refuses to run as root): as root the tests run
``initdb``/``pg_ctl`` through ``runuser`` as the ``postgres`` user Debian's package creates, and as any
other user, as themselves. It listens on a free port on 127.0.0.1 only (no Unix socket), with a
password for TCP logins, so the tests also pass credentials the way a site does. :func:`start_postgres`
returns a running :class:`PostgresServer`; each test gets a database of its own (``CREATE DATABASE`` is
fast), and :meth:`PostgresServer.stop` removes the folder.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.rgw import free_port

SUPERUSER = "hotfolder"
PASSWORD = "pg-test-secret-7f3a91c2"  # a value the secret tests can look for in logs
RUN_AS = "postgres"  # the user Debian's postgresql package creates


def bin_dir() -> Path | None:
    """The newest installed server's binaries (``/usr/lib/postgresql/<version>/bin``), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def missing_reason() -> str | None:
    """Why the server cannot be started here, or None."""
    if bin_dir() is None:
        return "PostgreSQL not installed (no pg_ctl); run .ci/install-postgres"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root and there is no '{RUN_AS}' user to run PostgreSQL as; run .ci/install-postgres"
    return None


@dataclass
class PostgresServer:
    root: Path
    port: int
    bin: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str, *, password: bool = True) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql://{SUPERUSER}{secret}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", RUN_AS, "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' "
                   "-c fsync=on -c max_connections=200 -c shared_buffers=32MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                  "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        """Stop (every connection cut) and start again on the same port."""
        self.stop()
        self.start()

    def sql(self, statement: str, database: str = "postgres") -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cursor = conn.execute(statement.encode())
            return cursor.fetchall() if cursor.description else []

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        self.sql(f"CREATE DATABASE {name}")
        return name

    def terminate(self, database: str, application_name: str | None = None) -> int:
        """``pg_terminate_backend`` of the connections to ``database`` (of one application, if named)."""
        where = f"datname = '{database}' AND pid <> pg_backend_pid()"
        if application_name is not None:
            where += f" AND application_name = '{application_name}'"
        rows = self.sql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {where}")
        return int(rows[0][0])  # type: ignore[call-overload]

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PostgresServer:
    binaries = bin_dir()
    assert binaries is not None, missing_reason()
    root = Path(tempfile.mkdtemp(prefix="hotfolder-pg-"))
    os.chmod(root, 0o755)
    password_file = root / "password"
    password_file.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        owner = pwd.getpwnam(RUN_AS)
        os.chown(root, owner.pw_uid, owner.pw_gid)
        os.chown(password_file, owner.pw_uid, owner.pw_gid)
    server = PostgresServer(root, free_port(), binaries)
    try:
        server._run("initdb", "-D", str(server.data), "-U", SUPERUSER, f"--pwfile={password_file}",
                    "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                    "--no-sync")
        password_file.unlink()
        server.start()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server
