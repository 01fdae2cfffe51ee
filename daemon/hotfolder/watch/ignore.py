"""Which names the watcher never picks up: temporary and system files, and folders such as @eaDir/.

Patterns are shell globs on single names, matched case-insensitively (Windows clients write
"THUMBS.DB" and "X.TMP" as they please); a pattern ending in "/" matches folder names only. The
default list is the config's (``hotfolder.config.DEFAULT_IGNORE``); ``watch.ignore`` replaces it.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True, slots=True)
class IgnoreRules:
    """Patterns compiled into two regexes: one for any name, one for folder names only."""

    any_name: re.Pattern[str] | None
    folder_only: re.Pattern[str] | None

    def file_ignored(self, name: str) -> bool:
        return self.any_name is not None and self.any_name.match(name) is not None

    def folder_ignored(self, name: str) -> bool:
        if self.file_ignored(name):
            return True
        return self.folder_only is not None and self.folder_only.match(name) is not None

    def path_ignored(self, parts: Sequence[str], *, last_is_folder: bool = False) -> bool:
        *folders, last = parts
        if any(self.folder_ignored(name) for name in folders):
            return True
        return self.folder_ignored(last) if last_is_folder else self.file_ignored(last)


def _combine(patterns: Sequence[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    # Case-insensitive: Windows clients write "THUMBS.DB", "Desktop.ini" and "X.TMP" as they please.
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns), re.IGNORECASE)


@functools.lru_cache(maxsize=32)
def compile_rules(patterns: tuple[str, ...]) -> IgnoreRules:
    folder_only = [p.rstrip("/") for p in patterns if p.endswith("/") and p.rstrip("/")]
    any_name = [p for p in patterns if p and not p.endswith("/")]
    return IgnoreRules(_combine(any_name), _combine(folder_only))


def is_ignored(relpath: PurePosixPath, patterns: Sequence[str], *, is_folder: bool = False) -> bool:
    """Whether any component of ``relpath`` (relative to the inbox) matches an ignore pattern.

    Patterns are fnmatch globs on single names, compared case-insensitively; a pattern ending in
    "/" matches folder names only. Every component but the last is a folder; the last is a file
    unless ``is_folder``.
    """
    if not relpath.parts:
        return False
    return compile_rules(tuple(patterns)).path_ignored(relpath.parts, last_is_folder=is_folder)


def kept_entries(listing: Iterable[os.DirEntry[str]], rules: IgnoreRules) -> Iterator[tuple[os.DirEntry[str], bool]]:
    """The entries the rules let through, each with whether it is a folder (a symlink to one is not)."""
    for entry in listing:
        try:
            # d_type answers is_dir without a syscall; a symlinked folder is not a dir here.
            is_folder = entry.is_dir(follow_symlinks=False)
        except OSError:
            continue  # gone between readdir and the stat that a file system without d_type needs
        if not (rules.folder_ignored(entry.name) if is_folder else rules.file_ignored(entry.name)):
            yield entry, is_folder
