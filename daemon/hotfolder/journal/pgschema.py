"""The PostgreSQL journal's schema, created and migrated by the daemon: a version row in ``meta`` says
which of ``MIGRATIONS`` have run, and every daemon that opens the database brings it up to date under one
advisory lock, so nodes starting together never migrate twice and nobody edits the schema by hand.

Names and paths are ``bytea`` (``os.fsencode``): a file name that is not UTF-8 is a str with surrogate
escapes, which PostgreSQL text cannot hold, and bytes give it back unchanged. Vendor ids, digests and
errors are JSON *text* written ASCII-only, like the SQLite journal's (``rows.encode_json``), for the same
reason (``jsonb`` refuses the ``\\udcXX`` escape of such a name). Times are seconds since the epoch, like
the SQLite journal's; a lease's expiry is the *database's* clock, so nodes whose clocks drift apart
still agree on when a lease ends.
"""

from __future__ import annotations

from typing import Any

SCHEMA_LOCK = 0x686F7466_00000001  # pg_advisory_xact_lock key while migrating ("hotf" + 1)

_JOB_COLUMNS = """
    target          bytea NOT NULL,
    record          bytea,
    grp             bytea,
    name            bytea NOT NULL,
    relpath         bytea NOT NULL,
    size            bigint NOT NULL,
    mtime_ns        bigint NOT NULL,
    digests         text,
    state           text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at double precision NOT NULL DEFAULT 0,
    vendor          text NOT NULL DEFAULT '{}',
    last_error      text,
    outcome_path    bytea,
    created_at      double precision NOT NULL,
    updated_at      double precision NOT NULL,
    finished_at     double precision,
    owner           text,
    lease_until     double precision,
    generation      bigint NOT NULL DEFAULT 0
"""

# Each entry brings the schema from version N to N + 1; never edit one that has shipped, add another.
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE jobs (id bigserial PRIMARY KEY, {_JOB_COLUMNS});
    CREATE UNIQUE INDEX jobs_one_active_per_path ON jobs (relpath) WHERE finished_at IS NULL;
    CREATE INDEX jobs_ready ON jobs (next_attempt_at, id) WHERE finished_at IS NULL;
    CREATE INDEX jobs_by_state ON jobs (state);
    CREATE INDEX jobs_by_record ON jobs (target, record, size);
    CREATE INDEX jobs_by_owner ON jobs (owner) WHERE owner IS NOT NULL;
    CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
    CREATE TABLE archived_jobs (id bigint PRIMARY KEY, {_JOB_COLUMNS});
    CREATE INDEX archived_jobs_by_record ON archived_jobs (target, record, size);
    CREATE TABLE claims (
        job_id     bigint NOT NULL,
        generation bigint NOT NULL,
        node       text NOT NULL,
        state      text NOT NULL,
        claimed_at double precision NOT NULL,
        PRIMARY KEY (job_id, generation)
    );
    CREATE TABLE nodes (
        name         text PRIMARY KEY,
        host         text NOT NULL,
        pid          integer NOT NULL,
        started_at   double precision NOT NULL,
        heartbeat_at double precision NOT NULL,
        stopped_at   double precision
    );
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)

JOB_COLUMNS = (
    "id, target, record, grp, name, relpath, size, mtime_ns, digests, state, attempts, "
    "next_attempt_at, vendor, last_error, outcome_path, created_at, updated_at, finished_at"
)

# The database's clock, in the same unit as every time column.
DB_NOW = "extract(epoch FROM clock_timestamp())::double precision"


def migrate(conn: Any) -> int:
    """Bring the schema up to ``SCHEMA_VERSION`` in one transaction; the version it was at before.
    Refuses a database written by a newer hotfolder (its schema is not ours to guess)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL)")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise RuntimeError(f"the journal database has schema version {found}, newer than this hotfolder's "
                               f"{SCHEMA_VERSION}: upgrade hotfolder on this node")
        for script in MIGRATIONS[found:]:
            conn.execute(script)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (str(SCHEMA_VERSION),))
    return found
