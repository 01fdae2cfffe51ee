"""`hotfolder check-config --online`: every target asks its vendor, with reads only, whether it would work.

Each target's adapter runs its ``check`` verb (docs/vendors.md says, per vendor, which calls it
makes): the credentials, and the configured field, entity or report field where the vendor offers a
read that shows it. Some vendors show a field only on a record; for them the first record folder of
the target in the inbox (by name, ignored names and unusable ids skipped) serves as the sample.
Nothing is created at a vendor, and every target is checked even after one fails, so one run
names every problem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hotfolder.config import Settings, TargetSettings
from hotfolder.errors import StepError
from hotfolder.layout import LayoutError, validate_record_id
from hotfolder.logsetup import redact, register_secret
from hotfolder.service import make_client
from hotfolder.vendors import REGISTRY, adapter_class
from hotfolder.vendors.base import CheckFailed
from hotfolder.watch.ignore import compile_rules

REFUSED_STATUSES = frozenset({401, 403})


@dataclass(frozen=True)
class TargetCheck:
    target: str
    ok: bool
    says: str  # what was verified (ok), or what is wrong; already redacted

    def line(self) -> str:
        return f"{self.target}: ok — {self.says}" if self.ok else f"{self.target}: {self.says}"


def check_targets(settings: Settings) -> list[TargetCheck]:
    return [_check(settings, target) for target in settings.targets.values()]


def _check(settings: Settings, target: TargetSettings) -> TargetCheck:
    with make_client(target, workers=1) as client:
        adapter = adapter_class(target)(target, client)
        adapter.secret_found = register_secret  # an access token fetched for the check is a secret too
        try:
            return TargetCheck(target.name, True, redact(adapter.check(sample_record(settings, target))))
        except CheckFailed as problem:
            return TargetCheck(target.name, False, redact(str(problem)))
        except StepError as error:
            refused = "credentials refused: " if error.outcome.status in REFUSED_STATUSES else ""
            return TargetCheck(target.name, False, redact(f"{refused}{error}"))


def sample_record(settings: Settings, target: TargetSettings) -> str | None:
    """The first record folder of ``target`` in the inbox, by name; None if it has none (or no records)."""
    if not REGISTRY[target.vendor].layout.has_records:
        return None
    rules = compile_rules(settings.watch.ignore)
    try:
        with os.scandir(settings.inbox / target.name) as listing:
            names = sorted(entry.name for entry in listing if entry.is_dir(follow_symlinks=False))
    except OSError:
        return None  # no inbox yet (the daemon makes it at start), or not ours to read
    for name in names:
        if rules.folder_ignored(name):
            continue
        try:
            validate_record_id(name)
        except LayoutError:
            continue
        return name
    return None
