"""Group folders: one vendor record for a whole folder (a Visibuild ticket with ``ticket.yaml``).

Every file of the folder is a job of its own through upload; the link is made once, by the first
member to find the folder complete (its manifest there, every file settled and uploaded), for all
members at once, and its answer is copied to each of them. A refusal is copied too, so the folder's
files go to failed/ together; the last file to leave takes the manifest with it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from hotfolder import outcomes
from hotfolder.errors import StepError
from hotfolder.jobtools import JobTools
from hotfolder.journal import Job
from hotfolder.logsetup import redact_value
from hotfolder.pipeline import OutcomeKind, State
from hotfolder.vendors.base import StepContext, Vendor
from hotfolder.watch.ignore import is_ignored


class GroupFolders:
    def __init__(self, tools: JobTools) -> None:
        self._tools = tools

    def link(self, job: Job, adapter: Vendor, ctx: StepContext) -> Mapping[str, Any]:
        """Link a group folder once, when its manifest is there and every file is uploaded.

        Runs under the folder's link lock. The first member to find the folder complete links all
        members at once and copies the answer to each of them; the others find it and succeed.
        A refusal is copied too, so the folder's files go to failed/ together.
        """
        members = self._tools.journal.group_jobs(job.target, job.record, job.group or "")
        for member in members:
            if member.vendor.get("group_failed"):
                raise StepError(OutcomeKind.PERMANENT, str(member.vendor["group_failed"]))
            if member.vendor.get("group_linked"):
                return {key: member.vendor[key] for key in member.vendor if key.startswith(("group_", "ticket_"))}
        failed = [m for m in members if m.state in (State.TO_FAILED, State.FAILED)]
        if failed:
            reason = f"another file of this folder failed: {failed[0].name}"
            self._tools.journal.add_vendor_ids([m.id for m in members], {"group_failed": reason})
            raise StepError(OutcomeKind.PERMANENT, reason)
        active = [m for m in members if not m.finished]
        folder = self._tools.source(job).parent
        manifest_path = folder / (adapter.manifest_name or "")
        waiting = self._waiting_for(folder, manifest_path, active)
        if waiting:
            raise StepError(OutcomeKind.PENDING, waiting, retry_after=max(self._tools.settings.watch.settle, 1.0))
        manifest = _read_manifest(manifest_path)
        member_ctxs = [ctx if m.id == job.id else self._tools.context(m) for m in active]
        ctx.remember = lambda ids: self._tools.journal.add_vendor_ids([m.id for m in active], redact_value(dict(ids)))
        try:
            ids = dict(adapter.link_group(ctx, member_ctxs, manifest))
        except StepError as error:
            if error.kind is OutcomeKind.PERMANENT:
                self._tools.journal.add_vendor_ids([m.id for m in active], {"group_failed": error.outcome.reason})
            raise
        ids["group_linked"] = True
        self._tools.journal.add_vendor_ids([m.id for m in active], redact_value(ids))
        return ids

    def _waiting_for(self, folder: Path, manifest_path: Path, active: list[Job]) -> str | None:
        """What the folder still lacks before it can be linked, in words; None when complete."""
        if not manifest_path.is_file() or manifest_path.is_symlink():
            return f"waiting for {manifest_path.name} in {folder.name}/"
        names = set()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name == manifest_path.name or not entry.is_file(follow_symlinks=False):
                    continue
                if is_ignored(PurePosixPath(entry.name), self._tools.settings.watch.ignore):
                    continue
                names.add(entry.name)
        by_name = {m.name: m for m in active}
        unseen = names - set(by_name)
        if unseen:
            return f"waiting for {len(unseen)} file(s) of {folder.name}/ to settle"
        uploading = [m for m in active if m.state is not State.LINK]
        if uploading:
            return f"waiting for {len(uploading)} file(s) of {folder.name}/ to upload"
        return None

    def move_manifest_if_last(self, job: Job, folder: Path, destination: Path) -> None:
        """The last file of a group folder to leave takes the manifest (ticket.yaml) with it."""
        adapter = self._tools.adapters.get(job.target)
        if job.group is None or adapter is None or not adapter.manifest_name:
            return
        manifest = folder / adapter.manifest_name
        # The folder's lock: two last files leaving at once must not both take the manifest.
        with self._tools.link_lock((job.target, job.record or "", job.group)):
            if not manifest.is_file() or manifest.is_symlink():
                return
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name == manifest.name or not entry.is_file(follow_symlinks=False):
                        continue
                    if not is_ignored(PurePosixPath(entry.name), self._tools.settings.watch.ignore):
                        return  # another file of the folder is still here; it will take the manifest
            outcomes.move_file(manifest, outcomes.free_name(destination, manifest.name))


def _read_manifest(path: Path) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise StepError(OutcomeKind.PERMANENT, f"{path.name}: cannot be read as YAML: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StepError(OutcomeKind.PERMANENT, f"{path.name}: expected a mapping of ticket fields")
    return data
