"""A kill campaign: files over every vendor target, ``kill -9`` at random moments, restarts, then an audit.

Theory of operation
-------------------
One simulator is seeded like ``hotfolder demo`` (one target per vendor and kind, from
``daemon.demo``). The campaign then runs ``kills`` rounds. In each round it drops a share of the
files into the inbox (so there is always work under way when the blow lands), starts
``hotfolder run`` as a real process, waits a random moment and sends SIGKILL. Some rounds first
ask the simulator to hold one vendor request for a moment (a ``delay`` fault), so that the kill
lands while a request is at the vendor and the vendor finishes it after the daemon is gone.
After the last round a ``hotfolder once`` finishes the work, and :func:`audit` checks what a user
would check, vendor by vendor, from the simulator's own inspection API:

* every dropped file is in done/ (or failed/ with its sidecar), with its bytes; the inbox is empty;
* at the vendor, each file's bytes are linked exactly once where its target links them (record
  attachment fields, the photo field, ticket attachment keys, the report field, Note.attachmentsIds,
  Document.fileId, one layer per file, one finalized form attachment per file);
* no ticket holds a key that is not ours, no ticket is empty, one ticket per ticket folder;
* the journal has no unfinished job and exactly one outcome (done or failed) per dropped path.

``lost`` counts files that did not reach both their outcome folder and their vendor link;
``duplicates`` counts links, tickets or layers beyond the one each file should have.

Why the campaign waits for a held request before it restarts (``wait_for_held``): a vendor that
has not answered yet when the daemon dies may still apply the request later. Fulcrum and EspoCRM
record writes replace a whole field (no optimistic concurrency), so a write applied *after* the
restarted daemon wrote the same field would silently undo that newer write; and a layer create
that lands after the restart looked for it is invisible to the adoption check. Both are written
down as known limits in the vendor modules. The campaign therefore lets the held request land
before restarting, like a real vendor answering within the daemon's restart time; pass
``wait_for_held=False`` to watch what the race does.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hotfolder.demo import DEMO_RECORDS, FIELD, PHOTO_FIELD, REPORT_FIELD, demo_targets, seed
from hotfolder.journal import Journal, JournalBackend
from hotfolder.pipeline import State
from hotfolder.sandbox import Sandbox
from hotfolder.watch.writers import PROBE_PREFIX
from tests.harness import SiteFolders, hotfolder, kill9

SAFERME_REPORT = "7001"
VISIBUILD_PROJECT = "proj-1"
FORM = "form-1"
NOTE = "note-1"
JPEG = b"\xff\xd8\xff\xe0"
PDF = b"%PDF-1.4 "
MBTILES = b"SQLite format 3\x00"

# Requests the campaign may hold at the vendor for a moment, so that a kill lands mid-request: the
# side effects that are not naturally idempotent (record writes, creates) and the byte uploads.
HELD_REQUESTS: tuple[tuple[str, str], ...] = (
    ("PUT", r"^/api/v2/records/"),  # Fulcrum record write (attachments and photos)
    ("POST", r"^/api/v2/layers\.json$"),  # layer create
    ("POST", r"^/api/v2/photos\.json$"),  # photo create
    ("POST", r"^/api/v2/attachments/finalize$"),
    ("POST", r"^/api/core/v1/tickets$"),  # Visibuild ticket create
    ("PATCH", r"^/api/v4/reports/"),  # SaferMe report field write
    ("POST", r"^/api/v4/file_attachments$"),  # SaferMe attachment create
    ("PUT", r"^/api/v1/(Document|Note)/"),  # EspoCRM record write
    ("POST", r"^/api/v1/Attachment"),  # EspoCRM upload (inline or a chunk)
    ("PUT", r"^/s3/"),  # presigned PUT (Fulcrum, layers, Visibuild)
    ("POST", r"^/s3/"),  # presigned POST form (SaferMe)
)


@dataclass(frozen=True)
class Dropped:
    """One file the campaign put in the inbox."""

    relpath: str  # below the inbox, POSIX
    target: str
    record: str | None
    group: str | None
    sha256: str
    size: int

    @property
    def name(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]

    @property
    def place(self) -> tuple[str, str | None]:
        return (self.target, self.record)


@dataclass
class CampaignResult:
    kills: int
    files: int
    done: int
    failed: int
    duplicates: int
    lost: int
    problems: list[str] = field(default_factory=list)
    twins_skipped: int = 0  # twins in one record that went to done/ as duplicates (config: skip)
    held_requests: int = 0  # kills aimed inside a request the vendor held
    kills_mid_work: int = 0  # kills after which the journal held unfinished jobs
    orphans: dict[str, int] = field(default_factory=dict)  # vendor objects never linked (allowed, reported)
    seconds: float = 0.0
    final_exit: int | None = None

    def summary(self) -> str:
        return (f"kills survived: {self.kills}, files: {self.files}, done: {self.done}, failed: {self.failed}, "
                f"duplicates: {self.duplicates}, lost: {self.lost}")

    def details(self) -> str:
        lines = [
            self.summary(),
            f"  kills with jobs under way: {self.kills_mid_work}, kills inside a held request: {self.held_requests}, "
            f"twins skipped as duplicates: {self.twins_skipped}, "
            f"final `once` exit: {self.final_exit}, {self.seconds:.1f}s",
            "  unlinked vendor objects (abandoned uploads, never linked): "
            + (", ".join(f"{k}={v}" for k, v in sorted(self.orphans.items())) or "none"),
        ]
        lines.extend(f"  PROBLEM: {problem}" for problem in self.problems[:50])
        if len(self.problems) > 50:
            lines.append(f"  ... and {len(self.problems) - 50} more")
        return "\n".join(lines)


@dataclass
class Campaign(SiteFolders):
    """Set up with :meth:`prepare`, then :meth:`run`; the sandbox belongs to the caller."""

    root: Path
    sandbox: Sandbox
    files: int = 60
    kills: int = 30
    seed: int = 1
    min_wait: float = 0.1
    max_wait: float = 1.5
    held_rate: float = 0.3  # share of rounds that hold one vendor request around the kill
    held_delay: tuple[float, float] = (0.2, 0.6)
    wait_for_held: bool = True
    latency: tuple[float, float] | None = (0.02, 0.12)  # every vendor request held this long, per round
    workers: int = 4
    log: Callable[[str], None] = lambda line: None
    dropped: list[Dropped] = field(default_factory=list)
    _documents: int = 0
    _latency_now: float = 0.0

    # -- set-up ---------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def daemon_log(self) -> Path:
        return self.root / "daemon.log"

    def prepare(self) -> None:
        """Seed the simulator like the demo and write a config with every demo target."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.inbox.mkdir(parents=True, exist_ok=True)
        seed(self.sandbox, self.inbox)
        # The demo's sample file is a dropped file like any other.
        sample = next((self.inbox / "fulcrum" / DEMO_RECORDS[0]).glob("*"))
        self._track(sample, "fulcrum", DEMO_RECORDS[0], None)
        targets: dict[str, dict[str, Any]] = demo_targets(self.sandbox.url)
        targets["saferme"]["poll_interval"] = "50ms"  # the simulator processes after one poll
        for name in ("espocrm-documents", "espocrm-notes"):
            # Small chunks, so kills also land inside chunked uploads (a resent chunk would corrupt).
            targets[name].update(chunk_threshold="96KB", chunk_size="32KB")
        for target in targets.values():
            target["timeout"] = "10s"
        config = {
            "inbox": str(self.inbox),
            "done": str(self.done),
            "failed": str(self.failed),
            "journal": str(self.journal_path),
            "log_level": "info",
            "watch": {"method": "native", "settle": "200ms", "poll_interval": "100ms", "rescan": "1m",
                      # The bytes these tests drop are stand-ins ("%PDF-1.4 " + noise), not whole files of their
                      # format; the readiness tests (test_readiness*, test_shares*) keep the tail test on.
                      "check_complete": False},
            "workers": self.workers,
            # Many attempts: a kill is not a setback, but a reset connection right after one may be.
            "retry": {"attempts": 30, "backoff": "50ms", "max_backoff": "500ms"},
            "targets": targets,
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def open_journal(self) -> JournalBackend:
        """The journal the daemons wrote, for the audit."""
        return Journal(self.journal_path)

    # -- files ----------------------------------------------------------------------------------

    def _track(self, path: Path, target: str, record: str | None, group: str | None) -> Dropped:
        data = path.read_bytes()
        dropped = Dropped(path.relative_to(self.inbox).as_posix(), target, record, group,
                          hashlib.sha256(data).hexdigest(), len(data))
        self.dropped.append(dropped)
        return dropped

    def _write(self, relpath: str, data: bytes, target: str, record: str | None, group: str | None) -> None:
        path = self.inbox / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.parent / f".{path.name}.partial"  # dot-files are ignored: the rename is the arrival
        temp.write_bytes(data)
        os.replace(temp, path)
        self._track(path, target, record, group)

    def _size(self, rng: random.Random) -> int:
        roll = rng.random()
        if roll < 0.6:
            return rng.randint(1, 16_000)
        if roll < 0.95:
            return rng.randint(16_000, 200_000)
        return rng.randint(200_000, 1_500_000)

    def _drop_one(self, rng: random.Random, number: int) -> bytes:
        """One file to a random target, in a type that target takes; returns its bytes."""
        target = rng.choices(
            ["fulcrum", "fulcrum-forms", "fulcrum-camera", "fulcrum-layers", "visibuild", "saferme",
             "espocrm-documents", "espocrm-notes"],
            weights=[3, 1, 2, 1, 2, 2, 1, 2],
        )[0]
        body = rng.randbytes(self._size(rng))
        stem = f"f{number:04d}"
        record: str | None
        if target == "fulcrum":
            record = rng.choice(DEMO_RECORDS)
            data, name = (PDF + body, f"{stem}.pdf") if rng.random() < 0.5 else (body, f"{stem}.bin")
        elif target == "fulcrum-forms":
            record, data, name = FORM, PDF + body, f"{stem}.pdf"
        elif target == "fulcrum-camera":
            record, data, name = rng.choice(DEMO_RECORDS), JPEG + body, f"{stem}.jpg"
        elif target == "fulcrum-layers":
            record, data, name = None, MBTILES + body, f"{stem}.mbtiles"
        elif target == "visibuild":
            record, data, name = VISIBUILD_PROJECT, JPEG + body, f"{stem}.jpg"
        elif target == "saferme":
            record = SAFERME_REPORT
            data, name = (PDF + body, f"{stem}.pdf") if rng.random() < 0.5 else (JPEG + body, f"{stem}.jpg")
        elif target == "espocrm-documents":
            # A File field holds one file: each file gets its own Document.
            self._documents += 1
            record = f"doc-{self._documents + 1}"
            self.sandbox.espocrm.add_record("Document", record, name=f"Campaign document {self._documents}")
            data, name = PDF + body, f"{stem}.pdf"
        else:
            record, data, name = NOTE, body, f"{stem}.txt"
        relpath = f"{target}/{name}" if record is None else f"{target}/{record}/{name}"
        self._write(relpath, data, target, record, None)
        return data

    def _drop_folder(self, rng: random.Random, number: int, members: int) -> Path:
        """A Visibuild ticket folder with ``members`` files; its ticket.yaml comes later."""
        folder = f"visibuild/{VISIBUILD_PROJECT}/folder-{number:04d}"
        for index in range(members):
            data = JPEG + rng.randbytes(self._size(rng))
            self._write(f"{folder}/part-{index}.jpg", data, "visibuild", VISIBUILD_PROJECT, f"folder-{number:04d}")
        return self.inbox / folder

    @staticmethod
    def _write_manifest(folder: Path) -> None:
        temp = folder / ".ticket.yaml.partial"
        temp.write_text(yaml.safe_dump({"title": f"Campaign {folder.name}", "priority": "high"}))
        os.replace(temp, folder / "ticket.yaml")

    def _plan(self, rng: random.Random) -> list[list[Callable[[], None]]]:
        """What to drop before each round (the last entry: before the final `once`)."""
        rounds: list[list[Callable[[], None]]] = [[] for _ in range(self.kills + 1)]
        budget = self.files - len(self.dropped)
        numbers = iter(range(1, 100_000))
        folders = max(1, budget // 40)
        for _ in range(folders):
            members = rng.randint(2, 4)
            number = next(numbers)
            at = rng.randrange(len(rounds))
            holder: dict[str, Path] = {}

            def drop_folder(n: int = number, m: int = members, h: dict[str, Path] = holder) -> None:
                h["folder"] = self._drop_folder(rng, n, m)

            def manifest(h: dict[str, Path] = holder) -> None:
                self._write_manifest(h["folder"])

            rounds[at].append(drop_folder)
            # ticket.yaml a round or two later: the folder's files upload, then wait for it.
            rounds[min(at + rng.randint(0, 2), len(rounds) - 1)].append(manifest)
            budget -= members
        twins = max(1, budget // 30)
        singles = max(0, budget - 2 * twins)
        for _ in range(singles):
            number = next(numbers)
            rounds[rng.randrange(len(rounds))].append(lambda n=number: self._drop_one(rng, n) and None)
        for _ in range(twins):
            # Twins: the same bytes dropped twice into one record; the second is skipped as a duplicate.
            first, second = next(numbers), next(numbers)
            at = rng.randrange(len(rounds))

            def drop_twins(a: int = first, b: int = second) -> None:
                data = self._drop_one(rng, a)
                target = self.dropped[-1].target
                if target in ("fulcrum-layers", "espocrm-documents"):
                    # No record level or one Document per file: a twin there is another place.
                    self._drop_one(rng, b)
                    return
                self._drop_twin(self.dropped[-1], b, data)

            rounds[at].append(drop_twins)
        return rounds

    def _drop_twin(self, original: Dropped, number: int, data: bytes) -> None:
        suffix = original.name.rsplit(".", 1)[-1]
        parent = original.relpath.rsplit("/", 1)[0]
        self._write(f"{parent}/f{number:04d}-twin.{suffix}", data, original.target, original.record, None)

    # -- the campaign ---------------------------------------------------------------------------

    def run(self) -> CampaignResult:
        started = time.monotonic()
        rng = random.Random(self.seed)
        rounds = self._plan(rng)
        held = 0
        busy = 0
        survived = 0
        for number in range(self.kills):
            for action in rounds[number]:
                action()
            hold = self._set_faults(rng)
            starts = self._starts()
            process = hotfolder("run", "-c", str(self.config_path), log=self.daemon_log)
            # The random wait counts from the daemon's start line, not from the spawn: on a loaded
            # two-core machine the interpreter's start alone can outlast the whole wait, and the kill
            # would find no daemon yet, let alone work under way.
            deadline = time.monotonic() + 10
            while self._starts() == starts and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.02)
            self._wait_then_aim(rng, hold)
            if process.poll() is not None:
                raise AssertionError(f"round {number}: the daemon exited by itself ({process.returncode}); "
                                     f"see {self.daemon_log}")
            kill9(process)
            survived += 1
            held_now = hold > 0 and not self._hold_pending(hold)
            if hold or self.latency:
                # Whatever the simulator still holds is finished by it after the daemon's death; let it
                # land before the restart looks (see the module's essay on wait_for_held).
                latest = max(hold, self._latency_now)
                self.sandbox.clear_faults()
                if self.wait_for_held:
                    time.sleep(latest + 0.1)
            held += bool(held_now)
            unfinished = self._unfinished()
            busy += unfinished > 0
            self.log(f"round {number + 1}/{self.kills}: killed with {unfinished} unfinished job(s); "
                     f"{len(self.dropped)} files dropped so far")
        for action in rounds[self.kills]:
            action()
        self.sandbox.clear_faults()
        final = hotfolder("once", "-c", str(self.config_path), log=self.daemon_log)
        try:
            exit_code = final.wait(300)
        except subprocess.TimeoutExpired:
            kill9(final)
            exit_code = None
        result = audit(self, survived)
        result.held_requests = held
        result.kills_mid_work = busy
        result.final_exit = exit_code
        if exit_code != 0:
            result.problems.append(f"the final `hotfolder once` exited with {exit_code}")
        result.seconds = time.monotonic() - started
        return result

    def _starts(self) -> int:
        try:
            return self.daemon_log.read_bytes().count(b'"hotfolder starting"')
        except FileNotFoundError:
            return 0

    def _wait_then_aim(self, rng: random.Random, hold: float) -> None:
        """The random wait; with a hold set, the kill is aimed inside the held request if it comes."""
        deadline = time.monotonic() + rng.uniform(self.min_wait, self.max_wait)
        if hold <= 0:
            time.sleep(max(0.0, deadline - time.monotonic()))
            return
        while time.monotonic() < deadline and self._hold_pending(hold):
            time.sleep(0.01)
        if not self._hold_pending(hold):
            time.sleep(rng.uniform(0.0, hold * 0.8))  # the request is at the vendor: kill it there

    def _hold_pending(self, hold: float) -> bool:
        """The long hold is still in the fault book (no request has met it yet)."""
        return any(f["delay"] == hold for f in self.sandbox.faults.pending())

    def _set_faults(self, rng: random.Random) -> float:
        """This round's vendor latency, and maybe one longer hold; returns the hold's delay (0: none).

        The latency spreads the work over the round, so that the kill finds requests in flight
        rather than an idle daemon. Faults are taken in the order added: the hold comes first.
        """
        self.sandbox.clear_faults()
        hold = 0.0
        if rng.random() < self.held_rate:
            method, pattern = rng.choice(HELD_REQUESTS)
            hold = rng.uniform(*self.held_delay)
            self.sandbox.add_fault(method, pattern, action="delay", delay=hold)
        self._latency_now = rng.uniform(*self.latency) if self.latency else 0.0
        if self._latency_now:
            self.sandbox.add_fault("*", r"^/(api|s3|oauth)/", action="delay", delay=self._latency_now,
                                   count=1_000_000)
        return hold

    def _unfinished(self) -> int:
        """Jobs the journal holds unfinished right after a kill (work the kill interrupted)."""
        if not self.journal_path.exists():
            return 0
        conn = sqlite3.connect(self.journal_path, timeout=30)
        try:
            (count,) = conn.execute("SELECT COUNT(*) FROM jobs WHERE finished_at IS NULL").fetchone()
        except sqlite3.DatabaseError:
            return 0  # killed before the schema was written
        finally:
            conn.close()
        return int(count)


# -- the audit -----------------------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Tally:
    """Expected against found, per place: each expected (name, sha256) must be found exactly once."""

    def __init__(self, result: CampaignResult) -> None:
        self.result = result
        self.missing: set[str] = set()  # relpaths of files whose link was not found

    def compare(self, what: str, expected: list[Dropped], found: list[tuple[str, str]], *,
                by_name: bool = True) -> None:
        """``found``: (name, sha256) of each link at the vendor for this place."""
        want = Counter((d.name if by_name else "", d.sha256) for d in expected)
        have = Counter((name if by_name else "", sha) for name, sha in found)
        for key, count in (have - want).items():
            self.result.duplicates += count
            self.result.problems.append(f"{what}: {key[0] or key[1][:12]} linked {have[key]} time(s), "
                                        f"expected {want[key]}")
        for key in want - have:
            for dropped in expected:
                if (dropped.name if by_name else "", dropped.sha256) == key:
                    self.missing.add(dropped.relpath)
            self.result.problems.append(f"{what}: {key[0] or key[1][:12]} not linked")


def _expected_links(campaign: Campaign, skipped: set[str]) -> dict[tuple[str, str | None], list[Dropped]]:
    places: dict[tuple[str, str | None], list[Dropped]] = defaultdict(list)
    for dropped in campaign.dropped:
        if dropped.relpath not in skipped:
            places[dropped.place].append(dropped)
    return places


def audit(campaign: Campaign, kills: int) -> CampaignResult:
    """Check outcome folders, the vendors and the journal; count what is lost or duplicated."""
    result = CampaignResult(kills=kills, files=len(campaign.dropped), done=0, failed=0, duplicates=0, lost=0)
    problems = result.problems
    lost: set[str] = set()
    skipped: set[str] = set()

    # Outcome folders and the inbox.
    for dropped in campaign.dropped:
        done = campaign.done / dropped.relpath
        failed = campaign.failed / dropped.relpath
        if done.is_file():
            if _sha(done.read_bytes()) != dropped.sha256:
                problems.append(f"{dropped.relpath}: done/ holds other bytes")
                lost.add(dropped.relpath)
            result.done += 1
            if done.with_name(done.name + ".duplicate.json").is_file():
                skipped.add(dropped.relpath)
        elif failed.is_file():
            result.failed += 1
            sidecar = failed.with_name(failed.name + ".error.json")
            reason = json.loads(sidecar.read_text()).get("reason") if sidecar.is_file() else "NO SIDECAR"
            problems.append(f"{dropped.relpath}: failed ({reason})")
        else:
            problems.append(f"{dropped.relpath}: in neither done/ nor failed/")
            lost.add(dropped.relpath)
    result.twins_skipped = len(skipped)
    # A daemon killed inside its writer-test probe (milliseconds at start) leaves that dot-file, which the
    # watcher ignores and the next start removes once it is a minute old (watch/writers.py): not a file lost.
    left = [p.relative_to(campaign.inbox).as_posix() for p in campaign.inbox.rglob("*")
            if p.is_file() and not p.name.startswith(PROBE_PREFIX)]
    if left:
        problems.append(f"inbox still holds {len(left)} file(s): {left[:5]}")

    tally = _Tally(result)
    expected = _expected_links(campaign, skipped | {d.relpath for d in campaign.dropped
                                                    if (campaign.failed / d.relpath).is_file()})
    _audit_fulcrum(campaign, expected, tally)
    _audit_visibuild(campaign, expected, tally)
    _audit_saferme(campaign, expected, tally)
    _audit_espocrm(campaign, expected, tally)
    lost |= tally.missing
    result.lost = len(lost)
    _audit_journal(campaign, result)
    return result


def _audit_fulcrum(campaign: Campaign, expected: dict[tuple[str, str | None], list[Dropped]], tally: _Tally) -> None:
    fulcrum = campaign.sandbox.fulcrum
    for record in DEMO_RECORDS:
        values = fulcrum.record(record)["form_values"]
        items = list(values.get(FIELD) or [])
        found = [(item["name"], _sha(fulcrum.attachment_bytes(item["attachment_id"]))) for item in items]
        tally.compare(f"fulcrum record {record}", expected.get(("fulcrum", record), []), found)
        photos = list(values.get(PHOTO_FIELD) or [])
        found = [(f"{item['caption']}.jpg", _sha(fulcrum.photo_bytes(item["photo_id"]))) for item in photos]
        tally.compare(f"fulcrum photos on {record}", expected.get(("fulcrum-camera", record), []), found)
    all_linked = {item["photo_id"] for record in DEMO_RECORDS
                  for item in fulcrum.record(record)["form_values"].get(PHOTO_FIELD) or []}
    tally.result.orphans["fulcrum photos"] = sum(1 for p in fulcrum.photos() if p["access_key"] not in all_linked)

    form_owned = [a for a in fulcrum.attachments() if a["owners"] == [{"type": "form", "id": FORM}]]
    complete = [a for a in form_owned if a["finalized"]]
    found = [(a["name"], _sha(fulcrum.attachment_bytes(a["id"]))) for a in complete]
    tally.compare(f"fulcrum form {FORM} (finalized attachments)", expected.get(("fulcrum-forms", FORM), []), found)
    record_linked = {item["attachment_id"] for record in DEMO_RECORDS
                     for item in fulcrum.record(record)["form_values"].get(FIELD) or []}
    tally.result.orphans["fulcrum attachments"] = sum(
        1 for a in fulcrum.attachments() if not a["finalized"] or (
            a["owners"][0]["type"] == "record" and a["id"] not in record_linked))

    layers = fulcrum.layers()
    found = [(f"{layer['name']}.mbtiles", _sha(fulcrum.layer_bytes(layer["id"]))) for layer in layers]
    tally.compare("fulcrum layers", expected.get(("fulcrum-layers", None), []), found)


def _audit_visibuild(campaign: Campaign, expected: dict[tuple[str, str | None], list[Dropped]],
                     tally: _Tally) -> None:
    visibuild = campaign.sandbox.visibuild
    ours = expected.get(("visibuild", VISIBUILD_PROJECT), [])
    by_sha = {d.sha256: d for d in campaign.dropped if d.target == "visibuild"}
    found: list[tuple[str, str]] = []
    keys: Counter[str] = Counter()
    for ticket in visibuild.tickets():
        ticket_keys = list(ticket["attachmentKeys"])
        keys.update(ticket_keys)
        if not ticket_keys:
            tally.result.problems.append(f"visibuild ticket {ticket['id']} has no attachment")
            tally.result.duplicates += 1
            continue
        members = []
        for key in ticket_keys:
            sha = _sha(visibuild.blob_bytes(key))
            name = visibuild.attachment(key)["filename"]
            found.append((name, sha))
            members.append(by_sha.get(sha))
        if any(member is None for member in members):
            tally.result.problems.append(f"visibuild ticket {ticket['id']} holds a key that is not one of ours")
            tally.result.duplicates += 1
            continue
        groups = {member.group for member in members if member is not None}
        if len(groups) != 1:
            tally.result.problems.append(f"visibuild ticket {ticket['id']} mixes folders {sorted(map(str, groups))}")
        (group,) = groups or {None}
        if group is not None:
            folder = [d for d in ours if d.group == group]
            if sorted(d.sha256 for d in folder) != sorted(m.sha256 for m in members if m is not None):
                tally.result.problems.append(f"visibuild ticket for {group}/ does not hold exactly its files")
            if ticket["title"] != f"Campaign {group}":
                tally.result.problems.append(f"visibuild ticket for {group}/ is titled {ticket['title']!r}")
    for key, count in keys.items():
        if count > 1:
            tally.result.problems.append(f"visibuild key {key} is on {count} tickets")
            tally.result.duplicates += count - 1
    tally.compare(f"visibuild project {VISIBUILD_PROJECT}", ours, found)


def _audit_saferme(campaign: Campaign, expected: dict[tuple[str, str | None], list[Dropped]], tally: _Tally) -> None:
    saferme = campaign.sandbox.saferme
    ids = [int(i) for i in saferme.field_value(SAFERME_REPORT, REPORT_FIELD)]
    found = [(str(saferme.file_attachment(i)["filename"]), _sha(saferme.blob_bytes(i))) for i in ids]
    tally.compare(f"saferme report {SAFERME_REPORT}", expected.get(("saferme", SAFERME_REPORT), []), found)
    if len(set(ids)) != len(ids):
        tally.result.problems.append("saferme: an attachment id is in the field twice")
    tally.result.orphans["saferme file attachments"] = sum(
        1 for a in saferme.file_attachments() if a["id"] not in set(ids))


def _audit_espocrm(campaign: Campaign, expected: dict[tuple[str, str | None], list[Dropped]], tally: _Tally) -> None:
    espocrm = campaign.sandbox.espocrm
    note = espocrm.record("Note", NOTE)["attachmentsIds"]
    found = [(espocrm.attachment(i)["name"], _sha(espocrm.attachment_bytes(i))) for i in note]
    tally.compare(f"espocrm Note {NOTE}", expected.get(("espocrm-notes", NOTE), []), found)
    linked = set(note)
    for (target, record), files in sorted(expected.items(), key=lambda item: str(item[0])):
        if target != "espocrm-documents" or record is None:
            continue
        file_id = espocrm.record("Document", record)["fileId"]
        found = [] if not file_id else [(espocrm.attachment(file_id)["name"], _sha(espocrm.attachment_bytes(file_id)))]
        linked.add(file_id)
        tally.compare(f"espocrm Document {record}", files, found)
    tally.result.orphans["espocrm attachments"] = sum(1 for a in espocrm.attachments() if a["id"] not in linked)


def _audit_journal(campaign: Campaign, result: CampaignResult) -> None:
    journal = campaign.open_journal()
    try:
        jobs = journal.jobs(limit=1_000_000)
    finally:
        journal.close()
    unfinished = [job for job in jobs if not job.finished]
    if unfinished:
        result.problems.append(f"journal: {len(unfinished)} unfinished job(s), e.g. "
                               f"{unfinished[0].relpath} at {unfinished[0].state.value}")
    outcomes: dict[str, list[State]] = defaultdict(list)
    for job in jobs:
        if job.finished:
            outcomes[job.relpath].append(job.state)
    for dropped in campaign.dropped:
        states = outcomes.get(dropped.relpath, [])
        if State.DONE in states and State.FAILED in states:
            result.problems.append(f"journal: {dropped.relpath} is both done and failed")
        if len([s for s in states if s in (State.DONE, State.FAILED)]) != 1:
            result.problems.append(f"journal: {dropped.relpath} has outcomes {[s.value for s in states]}")
