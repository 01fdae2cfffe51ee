"""The durable job store: one SQLite file, one row per file that entered the pipeline.

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

Where each part lives
---------------------
``backend.py`` is the interface the rest of the daemon uses (``JournalBackend``: each call and what it
promises); ``model.py`` the values that cross it. The SQLite backend is ``sqlite.Journal``, built from
``opening.py`` (pragmas, schema, the whole-file check, moving a damaged file aside), ``commit.py`` (group
commit: rules 1 and 2 for many threads at one fsync), ``changes.py`` and ``queries.py`` (each write and
each read), and ``rows.py`` (a job as a row, shared with the archive). The archive: ``archive.py`` (its
file and its own crash rules), ``archiving.py`` (the move and the check), ``archive_thread.py`` (when).
"""

from hotfolder.journal.backend import JournalBackend
from hotfolder.journal.model import Job, LeaseLost, NewJob, NodeInfo, StepRecord
from hotfolder.journal.sqlite import Journal

__all__ = ["Job", "Journal", "JournalBackend", "LeaseLost", "NewJob", "NodeInfo", "StepRecord"]
