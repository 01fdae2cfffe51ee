"""Shared pieces of the bench scripts: sizes, files, the sandbox and the daemon as separate processes.

Why separate processes: every figure is about the daemon alone. The sandbox (which plays the vendors
and their S3, and does real work per request: SigV4 checks, MD5 of each body, writing blobs) runs in
its own process, so its CPU and memory are never counted as the daemon's. The daemon runs through its
real entry point (``python -m hotfolder once|run -c config``), and its peak memory is the kernel's own
high-water mark: ``VmHWM`` in ``/proc/<pid>/status`` while it runs, and ``ru_maxrss`` from ``wait4``
when it exits (the same number, but nothing can be missed between two samples).

This file is also the sandbox launcher: ``python bench/common.py serve-sandbox --data DIR ...`` starts
the simulator, seeds the demo records (``hotfolder.demo.seed``) and the records a bench asks for, prints
its URL on the first line of stdout and serves until SIGTERM. ``python -m hotfolder.sandbox`` cannot seed
SaferMe reports or EspoCRM records, which the memory bench needs, hence this small wrapper.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
FULCRUM_TOKEN = "sandbox-token"  # the simulator's made-up credential (hotfolder.demo.DEMO_TOKEN)
FULCRUM_FIELD = "6ca0"  # hotfolder.demo.FIELD: the attachment field the demo records carry

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]?)(i?b)?", re.IGNORECASE)


# --- units and text -----------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``100KB``, ``1MB``, ``1GiB``, ``512``: powers of 1024, as the daemon's config reads them."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 100KB, 1MB, 1GiB)")
    multiplier = {"": 1, "k": KIB, "m": MIB, "g": GIB}[match.group(2).lower()]
    return int(float(match.group(1)) * multiplier)


def parse_duration_arg(text: str) -> float:
    """``50ms``, ``2s``, ``1m``, ``0.3``: seconds, as the daemon's config reads durations."""
    from hotfolder.errors import ConfigError
    from hotfolder.options import parse_duration

    try:
        return parse_duration(text, "duration")
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_sizes(text: str) -> list[int]:
    return [parse_size(part) for part in text.split(",") if part.strip()]


def human_size(size: float) -> str:
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= factor:
            return f"{size / factor:.3g} {unit}"
    return f"{size:.0f} B"


def mb_s(size: float, seconds: float) -> float:
    """Decimal MB/s, as the ceilings in S3-TEST-SERVER.md are written."""
    return size / seconds / 1e6 if seconds > 0 else float("inf")


def run_threads_for(worker: Callable[[int], None], threads: int, seconds: float, stop: threading.Event) -> float:
    """Start ``threads`` threads of ``worker(number)``, set ``stop`` after ``seconds`` and wait for them
    all; the seconds that really passed, for a rate."""
    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in pool:
        thread.join()
    return time.perf_counter() - started


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: no interpolation, so p95 of 200 samples is the 190th smallest."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5 - 1e-9)))
    return ordered[rank - 1]


def machine() -> str:
    """One line naming the machine a figure was taken on (it goes into RESULTS.md)."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return (
        f"{model}, {os.cpu_count()} cores, {memory / GIB:.0f} GiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def command_line() -> str:
    return "python " + " ".join(shlex.quote(arg) for arg in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


# --- reporting ---------------------------------------------------------------------------------


@dataclass
class Figure:
    """One line of a result: what was measured, the baseline beside it, and the target."""

    name: str
    value: str
    baseline: str = "—"
    ratio: str = "—"
    target: str = "—"
    met: bool | None = None

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "—"}[self.met]


@dataclass
class Report:
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *args: Any, **kwargs: Any) -> Figure:
        figure = Figure(*args, **kwargs)
        self.figures.append(figure)
        return figure

    def print(self) -> None:
        """A plain table for the terminal, then the same rows as Markdown for RESULTS.md."""
        today = dt.date.today().isoformat()
        print(f"\n== {self.title} ==")
        print(f"date: {today}\nmachine: {machine()}\ncommand: {command_line()}")
        for figure in self.figures:
            print(
                f"  {figure.name}: {figure.value}  | baseline {figure.baseline}  | ratio {figure.ratio}"
                f"  | target {figure.target}  -> {figure.verdict}"
            )
        for note in self.notes:
            print(f"  note: {note}")
        print("\nmarkdown:")
        for figure in self.figures:
            print(
                f"| {today} | `{command_line()}` | {figure.name} | {figure.value} | {figure.baseline} | "
                f"{figure.ratio} | {figure.target} | {figure.verdict} |"
            )
        sys.stdout.flush()


# --- files -------------------------------------------------------------------------------------


def write_file(path: Path, size: int, *, block: bytes | None = None) -> Path:
    """Write ``size`` bytes that differ from every other file's (the daemon skips duplicate content).

    Large files repeat one random MiB with a fresh random prefix on every block: random enough that
    nothing on the way could compress it, far cheaper than ``os.urandom(size)``. Written under a dot
    name (ignored by the watcher) and renamed into place, so the daemon never sees a partial file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.partial")
    pattern = block if block is not None else os.urandom(MIB)
    with open(temp, "wb") as handle:
        left = size
        while left > 0:
            piece = os.urandom(16) + pattern[16 : min(len(pattern), left)]
            piece = piece[:left]
            handle.write(piece)
            left -= len(piece)
    os.replace(temp, path)
    return path


def make_small_files(
    folder_of: Callable[[int], Path], count: int, size: int, name: str = "scan-{index:06d}.bin"
) -> list[Path]:
    """``count`` distinct files of ``size`` bytes; ``folder_of(index)`` says where each goes."""
    paths = []
    noise = os.urandom(size + 4096)
    for index in range(count):
        folder = folder_of(index)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name.format(index=index)
        offset = index % 4096  # a different window of the noise, and a unique header: distinct digests
        path.write_bytes(index.to_bytes(8, "big") + noise[offset : offset + size - 8])
        paths.append(path)
    return paths


@contextlib.contextmanager
def workdir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A scratch folder on the real disk (``/tmp`` is ext4 here, not tmpfs: fsyncs cost what they cost).

    ``BENCH_TMP`` chooses another parent; ``keep`` leaves it behind for a post-mortem.
    """
    parent = os.environ.get("BENCH_TMP")
    path = Path(tempfile.mkdtemp(prefix=f"hotfolder-bench-{prefix}-", dir=parent))
    try:
        yield path
    finally:
        if keep:
            print(f"(kept {path})")
        else:
            subprocess.run(["rm", "-rf", str(path)], check=False)


# --- the sandbox in its own process -------------------------------------------------------------


class SandboxProcess:
    """``python bench/common.py serve-sandbox`` as a child process; the daemon talks to ``url``."""

    def __init__(
        self,
        data: Path,
        *,
        inbox: Path | None = None,
        fulcrum_records: Iterable[str] = (),
        espocrm_max_upload: int | None = None,
        presign_expires: int = 3600,
        latency: float = 0.0,
    ) -> None:
        self.inbox = inbox
        self.args = [PYTHON, str(Path(__file__).resolve()), "serve-sandbox", "--data", str(data)]
        if inbox is not None:
            self.args += ["--inbox", str(inbox)]
        records = list(fulcrum_records)
        if records:
            # Through a file: 100,000-record command lines are not a thing.
            listing = data.parent / f"{data.name}-records.txt"
            listing.write_text("\n".join(records) + "\n")
            self.args += ["--records-file", str(listing)]
        if espocrm_max_upload is not None:
            self.args += ["--espocrm-max-upload", str(espocrm_max_upload)]
        self.args += ["--presign-expires", str(presign_expires)]
        if latency > 0:
            self.args += ["--latency", str(latency)]
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> SandboxProcess:
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("http://"):
            self.process.kill()
            raise RuntimeError(f"sandbox did not start: {line!r}")
        self.url = line
        if self.inbox is not None:
            # The demo seed leaves one sample file to watch travel; a bench wants only its own files.
            (self.inbox / "fulcrum" / "rec-1001" / "welcome-scan.txt").unlink(missing_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def get(self, path: str) -> Any:
        response = httpx.get(self.url + path, timeout=120)
        response.raise_for_status()
        return response.json()

    def requests(self) -> list[dict[str, Any]]:
        """Every request the sandbox answered: method, path (never the query), status, ``at`` (epoch s)."""
        answer = self.get("/_sandbox/requests")
        return list(answer["requests"] if isinstance(answer, dict) else answer)

    def presign_put(self, record: str, name: str, size: int) -> tuple[str, dict[str, str]]:
        """A fresh presigned S3 PUT from the Fulcrum simulator: the call the daemon's presign step makes."""
        body = {"owners": [{"type": "record", "id": record}], "name": name, "file_size": size,
                "metadata": {"filename": name}}
        response = httpx.post(
            f"{self.url}/api/v2/attachments", json=body, timeout=30,
            headers={"X-ApiToken": FULCRUM_TOKEN, "Accept": "application/json"},
        )
        response.raise_for_status()
        answer = response.json()
        return answer["url"], {str(k): str(v) for k, v in (answer.get("headers") or {}).items()}


def serve_sandbox(argv: Sequence[str]) -> int:
    """The child side of :class:`SandboxProcess`."""
    parser = argparse.ArgumentParser(prog="common.py serve-sandbox")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--inbox", type=Path)
    parser.add_argument("--records-file", type=Path)
    parser.add_argument("--espocrm-max-upload", type=int)
    parser.add_argument("--presign-expires", type=int, default=3600)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer, as a remote "
                        "vendor's round trip")
    args = parser.parse_args(argv)

    from hotfolder.demo import seed
    from hotfolder.sandbox import Sandbox

    sandbox = Sandbox(args.data, port=0, presign_expires=args.presign_expires)
    if args.inbox is not None:
        seed(sandbox, args.inbox)
    if args.records_file is not None:
        for record in args.records_file.read_text().split():
            sandbox.fulcrum.add_record(record, form_values={})
    if args.espocrm_max_upload is not None:
        sandbox.espocrm.max_upload_size = args.espocrm_max_upload
    if args.latency > 0:
        # Every vendor and S3 request waits this long before it is answered (control paths do not).
        sandbox.add_fault("*", r"^/", action="delay", delay=args.latency, count=2**62)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    with sandbox:
        print(sandbox.url, flush=True)
        stopped.wait()
    return 0


# --- configuration -----------------------------------------------------------------------------


def demo_target(url: str, name: str, **overrides: Any) -> dict[str, Any]:
    """One of ``hotfolder.demo.demo_targets`` (the configuration the demo and its test use), adjusted."""
    from hotfolder.demo import demo_targets

    return {**demo_targets(url)[name], **overrides}


def write_config(
    root: Path,
    targets: Mapping[str, Mapping[str, Any]],
    *,
    workers: int = 4,
    method: str = "auto",
    settle: str = "1s",
    poll_interval: str = "1s",
    rescan: str = "5m",
    log_level: str = "info",
    duplicates: str = "skip",
    watch_extra: dict[str, Any] | None = None,
    http: dict[str, Any] | None = None,
) -> Path:
    """A config file beside ``root``'s inbox/done/failed/journal.db; returns its path."""
    config = {
        "inbox": str(root / "inbox"),
        "done": str(root / "done"),
        "failed": str(root / "failed"),
        "journal": str(root / "state" / "journal.db"),
        "log_level": log_level,
        "duplicates": duplicates,
        "workers": workers,
        "watch": {"method": method, "settle": settle, "poll_interval": poll_interval, "rescan": rescan,
                  **(watch_extra or {})},
        "retry": {"attempts": 3, "backoff": "1s", "max_backoff": "5s"},
        "targets": {name: dict(target) for name, target in targets.items()},
    }
    if http is not None:
        config["http"] = http  # the status page and metrics endpoint (off when absent)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --- the daemon in its own process --------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM / VmRSS (bytes) of a live process; empty once it has exited."""
    values: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            values[name] = int(rest.split()[0]) * KIB
    return values


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (``/proc/<pid>/stat`` fields 14 and 15)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def proc_rchar(pid: int) -> int:
    """Bytes the process has read through read()-like calls, files and sockets alike."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


class DaemonProcess:
    """``python -m hotfolder <command> -c <config>``, its log in a file, its memory watched while it runs."""

    def __init__(
        self, command: str, config: Path, log: Path, *, sample_interval: float = 0.05,
        wrapper: Sequence[str] = (),
    ) -> None:
        # ``wrapper`` runs the daemon under another program (a profiler such as py-spy); the memory
        # and CPU figures then include that program, so use it for profiles, not for figures.
        self.args = [*wrapper, PYTHON, "-m", "hotfolder", command, "-c", str(config)]
        self.log = log
        self.sample_interval = sample_interval
        self.peak_rss = 0
        self.rchar = 0
        self.cpu_seconds = 0.0
        self.cpu_system = 0.0
        self.context_switches = 0
        self.started_at = 0.0  # time.time() just before the fork: the daemon's clock zero
        self.returncode: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> DaemonProcess:
        handle = open(self.log, "wb")  # noqa: SIM115 - closed in wait(); the child writes into it
        self._log_handle = handle
        self.started_at = time.time()
        self._process = subprocess.Popen(self.args, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
        self._sampler = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        # VmHWM is the kernel's own peak, so a sample only has to land before exit; wait4 covers the end.
        while not self._stop_sampling.is_set():
            status = proc_status(self.pid)
            if status:
                self.peak_rss = max(self.peak_rss, status.get("VmHWM", 0))
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.rchar = max(self.rchar, proc_rchar(self.pid))
                self.cpu_seconds = max(self.cpu_seconds, proc_cpu_seconds(self.pid))
            self._stop_sampling.wait(self.sample_interval)

    def current_hwm(self) -> int:
        return proc_status(self.pid).get("VmHWM", 0)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit; peak RSS from ``wait4``'s ``ru_maxrss`` (KiB on Linux) joins the samples."""
        assert self._process is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            # wait4 rather than Popen.wait: it is the only way to get the child's rusage.
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{' '.join(self.args)} still running after {timeout}s")
            time.sleep(0.02)
        self._stop_sampling.set()
        if self._sampler is not None:
            self._sampler.join()
        self.peak_rss = max(self.peak_rss, usage.ru_maxrss * KIB)
        self.cpu_seconds = max(self.cpu_seconds, usage.ru_utime + usage.ru_stime)
        self.cpu_system = usage.ru_stime  # kernel time (fsync, syscalls), part of cpu_seconds
        self.context_switches = usage.ru_nvcsw + usage.ru_nivcsw
        self.returncode = os.waitstatus_to_exitcode(status)
        self._process.returncode = self.returncode  # so Popen does not try to reap it again
        self._log_handle.close()
        return self.returncode

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM (the daemon's clean stop), then wait."""
        assert self._process is not None
        if self.returncode is None:
            self._process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self.returncode is None:
            with contextlib.suppress(TimeoutError):
                self.terminate(timeout=60)
            if self.returncode is None:
                self._process.kill()
                self.wait()

    def events(self) -> list[dict[str, Any]]:
        return read_log(self.log)


def read_log(path: Path) -> list[dict[str, Any]]:
    """The daemon's JSON log lines (it writes JSON when stdout is not a terminal), each with ``ts``
    turned into epoch seconds under ``t``. Non-JSON lines (tracebacks) are skipped."""
    events = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            stamp = event.get("timestamp")
            if isinstance(stamp, str):
                event["t"] = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            events.append(event)
    return events


def step_events(events: Iterable[Mapping[str, Any]], step: str) -> list[Mapping[str, Any]]:
    return [e for e in events if e.get("event") == "step done" and e.get("step") == step]


def self_peak_rss() -> int:
    """This process's own peak RSS, for in-process figures."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve-sandbox":
        raise SystemExit(serve_sandbox(sys.argv[2:]))
    raise SystemExit("usage: python bench/common.py serve-sandbox --data DIR [--inbox DIR] [--records-file F]")


ENDPOINT_CHOICES = {"off": (False,), "on": (True,), "both": (False, True)}
ENDPOINT_ON: dict[str, Any] = {"listen": "127.0.0.1:0"}


def endpoint_url(events: Iterable[Mapping[str, Any]]) -> str | None:
    """The endpoint's base URL, from the daemon's log line that announces it."""
    for event in events:
        if event.get("event") == "status page and metrics":
            return str(event["url"]).rstrip("/")
    return None
