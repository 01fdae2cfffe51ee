"""Where a file sits says where it goes: inbox path ⇄ (target, record, group, name).

Each vendor says where its files sit (``Layout`` in its ``vendors/<name>_options.py``):

    fulcrum-layers   inbox/<target>/<file>                      no record: one layer per file
    visibuild        inbox/<target>/<project>/<file>            record = project
                     inbox/<target>/<project>/<folder>/<file>   group = a ticket folder
    every other      inbox/<target>/<record>/<file>

Every segment below the target is checked by :func:`validate_segment` before any vendor sees
it: these strings go into URLs, JSON and outcome paths. What is refused is what cannot be
carried faithfully (".", "..", separators, control characters, bytes that were not UTF-8,
names no file system would hold); everything else is kept exactly as written. In particular
nothing is Unicode-normalised: "é" as one code point (NFC) and as "e" + accent (NFD) are two
different folders on Linux, so they are two different records here too.

Nothing here touches the disk: paths are compared lexically, so a file that has already
vanished can still be placed, and symlinks are the watcher's business.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hotfolder.config import TargetSettings
from hotfolder.vendors import REGISTRY

MAX_SEGMENT_BYTES = 255  # NAME_MAX on Linux and most file systems


@dataclass(frozen=True)
class Placement:
    target: str
    record: str | None  # None for fulcrum-layers targets, which have no record level
    group: str | None  # a sub-folder below the record (Visibuild ticket folders), else None
    name: str
    relpath: PurePosixPath  # target/[record/][group/]name, the same below inbox, done and failed


class LayoutError(Exception):
    """A file that cannot be placed; ``reason`` is a sentence a person reads, naming the file."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _show(text: str) -> str:
    # repr() escapes control characters and lone surrogates, so a hostile name cannot
    # rewrite a log line or a terminal.
    return repr(text)


# Unicode's categories Cs (surrogates) and Cc (C0 with NUL, DEL, C1) as character ranges: a regex
# scans in C, where a unicodedata.category() call per character costs a step per file name.
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _refusal(value: str) -> str | None:
    """Why ``value`` cannot be a path segment, or None if it can."""
    if not value:
        return "is empty"
    if value in (".", ".."):
        return "is a relative folder reference"
    if "/" in value or "\\" in value:
        return "contains a path separator"
    if _SURROGATE.search(value):
        # os.fsdecode keeps undecodable bytes as lone surrogates U+DC80..U+DCFF (surrogateescape);
        # no surrogate at all can be written as UTF-8, so any of them means "not UTF-8".
        return "is not valid UTF-8"
    if _CONTROL.search(value):
        return "contains a control character"
    if len(value.encode("utf-8")) > MAX_SEGMENT_BYTES:
        return f"is longer than {MAX_SEGMENT_BYTES} bytes"
    if value != value.strip():
        return "has leading or trailing whitespace"
    return None


def validate_segment(value: str, what: str) -> None:
    """Refuse a path segment that cannot be carried faithfully to a vendor; ``what`` names it."""
    why = _refusal(value)
    if why is not None:
        raise LayoutError(f"{what} {_show(value)} {why}")


def validate_record_id(record: str) -> None:
    validate_segment(record, "record id")


def _role(index: int, count: int) -> str:
    if index == count - 1:
        return "file name"
    return "record id" if index == 1 else "folder"


def _relative_parts(inbox: Path, path: Path) -> tuple[str, ...] | None:
    try:
        return PurePosixPath(path).relative_to(PurePosixPath(inbox)).parts
    except ValueError:
        return None


def place(inbox: Path, path: Path, targets: Mapping[str, TargetSettings]) -> Placement:
    """Where ``path`` (a file below ``inbox``) goes, or LayoutError saying why it goes nowhere."""
    parts = _relative_parts(inbox, path)
    shown = _show(str(path))
    if parts is None:
        raise LayoutError(f"{shown} is outside the inbox {_show(str(inbox))}")
    if not parts:
        raise LayoutError(f"{shown} is the inbox itself, not a file in it")
    target_name = parts[0]
    target = targets.get(target_name)
    if target is None:
        configured = ", ".join(sorted(targets)) or "none"
        raise LayoutError(f"{shown}: unknown target {_show(target_name)} (configured: {configured})")
    # Segments first: a ".." must be refused as such, not reported as "too deep".
    try:
        for index, segment in enumerate(parts[1:], start=1):
            validate_segment(segment, _role(index, len(parts)))
    except LayoutError as error:
        raise LayoutError(f"{shown}: {error.reason}") from None
    layout = REGISTRY[target.vendor].layout
    depths = layout.depths
    if len(parts) == 1:
        raise LayoutError(f"{shown} is the target folder itself, not a file in it")
    if len(parts) < min(depths):
        expected = layout.shape
        raise LayoutError(
            f"{shown}: file directly in the target folder has no record folder; expected {expected}"
        )
    if len(parts) > max(depths):
        raise LayoutError(f"{shown} is too deep; expected {layout.shape}")
    record = parts[1] if len(parts) >= 3 else None
    group = parts[2] if len(parts) == 4 else None
    name = parts[-1]
    return Placement(target_name, record, group, name, PurePosixPath(*parts))


def _segments(placement: Placement) -> list[str]:
    segments = [placement.target]
    segments += [part for part in (placement.record, placement.group) if part is not None]
    segments.append(placement.name)
    return segments


def outcome_path(root: Path, placement: Placement) -> Path:
    """root/target/[record/][group/]name. Segments are checked again: a Placement built by hand
    (say, from a journal row) must not be able to point outside ``root``."""
    segments = _segments(placement)
    for segment in segments:
        validate_segment(segment, "path segment")
    return root.joinpath(*segments)


def inbox_path(inbox: Path, placement: Placement) -> Path:
    """Where the placed file sits in the inbox: the same shape as its outcome paths."""
    return outcome_path(inbox, placement)
