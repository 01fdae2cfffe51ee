"""The durable job store: one SQLite file (or one PostgreSQL database shared by several daemons), one row
per file that entered the pipeline.

Crash rules
-----------
Why SQLite: it gives atomic, durable transactions on one file with a recovery procedure
that has been tested against power loss for two decades; a hand-written append log would
have to re-earn all of that (torn records, checksums, compaction). We open it in WAL mode
with ``synchronous=FULL``: every committed transaction is fsynced in the write-ahead log
before ``commit()`` returns, so a committed row survives a power cut. A transaction that
was not committed (torn WAL tail, half-written frame) is discarded by SQLite at the next
open, which leaves the job at its previous step: exactly what the runner expects.

What is promised, step by step:

1. A job row is committed before the daemon does anything with its file.
2. Each step's result (the vendor ids it returned, the next state, attempts, the retry
   time) is committed *before* the next step's side effect starts. After ``kill -9`` the
   job resumes at the first step whose result was not committed.
3. Therefore a step may run twice: once before the crash (its effect happened but its
   result was lost) and once after. Each step is written to be safe to repeat:
   hash and presign have no lasting effect at the vendor (a re-presign leaves at most an
   unfinished, unlinked upload behind); upload to a fresh presigned URL writes a new
   object; finalize is checked against the vendor's attachment state; link first reads
   the record and does nothing if our attachment is already there.
4. Secrets never enter the journal: presigned URLs and their headers live in memory only.
   A job that restarts at ``upload`` finds no URL and goes back to ``presign``.
5. A file leaves the inbox only after the journal says where it goes: the destination is
   committed first (``outcome_path``; for done/ in the same commit as the link's result), then
   the file is moved, then the job is closed. A crash in between is finished by
   ``outcomes.finish_interrupted_move``.
6. Only one unfinished job may exist per inbox path (a partial unique index), so a file
   seen twice (event + rescan, or before and after a restart) never becomes two jobs.
7. A finished job is never changed again. Once it is older than ``archive_after`` it moves
   to the archive beside the journal (copied and committed there first, then deleted here;
   ``archive.py``), where the twin lookup still finds it. Ids are AUTOINCREMENT, so an
   archived job's id is never given to a new one.

What is not promised: a damaged database file (not a torn WAL tail, but a main file cut
mid-page or overwritten) is moved aside whole and a fresh journal started, with a loud log line;
SQLite cannot salvage rows from it. Files still in the inbox then start again from ``hash``, and
the link checks above compare ids the fresh journal no longer has. Fulcrum record attachments are
still recognised (an item of the same name whose bytes, fetched back, hash the same), so they are
not attached twice; for the other vendors a file whose link landed just before the damage may be
linked a second time. A WAL file from another database placed beside the journal cannot be told
apart by SQLite and is applied.

When damage is looked for: ``PRAGMA quick_check`` reads every page, which from a cold disk takes
seconds once a journal holds a million finished jobs (bench/RESULTS.md; the archive keeps the journal
to recent work, and is checked in the background), so the daemon runs it at start only when the
last run did not close the journal (a crash or power cut leaves a WAL and no clean-stop mark), when
the file's size disagrees with its header (cut or grown meanwhile), and at least every
``FULL_CHECK_EVERY``. Damage done to a cleanly closed file without changing its size is found by
that weekly check, or by SQLite when the damaged page is read.

Several processes on several hosts (the PostgreSQL journal)
-----------------------------------------------------------
Several daemons, each on its own server, watch one share and write one PostgreSQL database
(``postgres.py``). Rules 1 to 7 hold as written, with "committed" meaning committed by PostgreSQL
(``synchronous_commit`` on: fsynced on the database server before the commit returns). Rule 6 is the
same partial unique index, so every node may submit every file it sees: one job per path; and a file a
node saw that another node then moved out is not journaled again (a job of its path finished since). What is new
is that a job's next step could be taken by two processes at once, and each rule below stops that.

8. *Claims are leases.* A node takes a ready job in one statement (``FOR UPDATE SKIP LOCKED``) that makes
   it the owner until ``lease`` seconds later on the database's clock and raises the job's generation
   by one; a ``claims`` row records who took it at which step (``hotfolder status``, the history). A
   heartbeat renews the node's leases every third of a lease. A wait (backoff, a file still being
   written) or a finish gives the lease back in the same write. A node that dies (``kill -9``, a power
   cut, a cable pulled) renews nothing: its leases end, and the next node to look claims the job and
   resumes it at its last committed step, with the same checks that make a restart safe (rule 3). A
   node restarted under the same name gives back at once whatever its earlier run still held.
9. *Fencing.* Every step result is written compare-and-set on the generation the node claimed with.
   A node frozen past its lease (``SIGSTOP``, a stall, a network partition) that wakes up writes
   nothing: its write finds a later generation and raises ``LeaseLost``, and the worker drops the job
   without a further side effect. A finished job is never written again, whoever writes.
10. *No side effect without a lease.* Before each step the worker checks that its lease has at least a
    third of its length left by this node's own monotonic clock, counted from when the last renewal was
    *sent* (so a renewal that reached the database later only makes the real lease longer). A node cut
    off from the database stops starting steps within two thirds of a lease, before anyone else may
    claim its jobs. The moves to ``done/`` and ``failed/`` ask the database itself: while it cannot be
    reached, no file leaves the inbox.
11. *One link per record across nodes.* A link takes, besides the process's own lock, a
    transaction-scoped advisory lock on its key (``pg_advisory_xact_lock``) held by a connection of its
    own for the link's duration, and confirms the lease *with the database* under that lock. So links
    to one record, Visibuild folder tickets and Fulcrum layers (both made at the link) are made by one
    node at a time, each by the job's current holder, and the one after finds the earlier one's item.
12. *Ids in commit order.* Intake takes an advisory lock, so a job with a lower id was committed before
    any job with a higher one: the twin rule (``twins.py``: the older goes first, the younger waits for
    its digests) sees across nodes exactly what it sees in one process.
13. *The database goes away* (a restart, ``pg_terminate_backend``, a cut cable): every call waits and
    retries with backoff, logging why once per outage; nothing leaves the inbox and no step starts (its
    lease check fails once renewals stop). A write whose answer was lost with its connection is made
    again: each is idempotent (intake skips a path with a job; a step result sets absolute values and
    merges ids; a finish found already made by this very generation is taken as done).

Which window remains. Rule 10 is checked *before* a step, so a node can pass the check, freeze, and
start its side effect after its lease has ended and another node holds the job. For upload, finalize
and the moves this repeats a step the rules already allow to repeat (rule 3; a move is finished by
``finish_interrupted_move``, whoever holds the job). For the link, rule 11 narrows it to the link's
own read-before-write: the frozen node holds the record's advisory lock while frozen (its connection
stays open), so the new holder waits for it, then reads the record and finds the item there. Only if
the frozen node's connection is also cut (the server ends sessions idle in a transaction after five
minutes; ``pg_terminate_backend``) does its lock go while it may be between its read and its write;
its write of a whole field (Fulcrum, EspoCRM: no optimistic concurrency) may then undo a link made
meanwhile. That is the same known limit as a request the vendor applies after the daemon died (the
vendor modules and ``tests/campaign.py``), and the file itself is still attached once.

What is not covered: the share itself is one point of failure (every node reads the same files), and
so is the database unless the site replicates it; clocks matter only for retry times, not leases.

Where each part lives
---------------------
``backend.py`` is the interface the rest of the daemon uses (``JournalBackend``: each call and what it
promises); ``model.py`` the values that cross it. The SQLite backend is ``sqlite.Journal``, built from
``opening.py`` (pragmas, schema, the whole-file check, moving a damaged file aside), ``commit.py`` (group
commit: rules 1 and 2 for many threads at one fsync), ``changes.py`` and ``queries.py`` (each write and
each read), and ``rows.py`` (a job as a row, shared with the archive). The PostgreSQL journal is
``postgres.PostgresJournal`` with its schema and migrations in ``pgschema.py``. The archive: ``archive.py`` (its
file and its own crash rules), ``archiving.py`` (the move and the check), ``archive_thread.py`` (when).
"""

from hotfolder.journal.backend import JournalBackend
from hotfolder.journal.model import Job, LeaseLost, NewJob, NodeInfo, StepRecord
from hotfolder.journal.sqlite import Journal

__all__ = ["Job", "Journal", "JournalBackend", "LeaseLost", "NewJob", "NodeInfo", "StepRecord"]
