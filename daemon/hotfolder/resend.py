"""A file whose bytes changed after they were sent: send the new bytes, and let the link replace the stale copy.

The move to done/ checks that the file is still the one hashed (size, mtime, ctime, inode; across
filesystems, that the copy has the digest that was sent). When it is not, and its content really
differs (only its times may have been touched), the vendor holds an earlier version. The job then
sets every id of that send aside under ``stale`` and starts again at the hash step. The link step
of the new send replaces the stale attachment where the vendor lets a link change (the Fulcrum
record's field, EspoCRM's File or Attachment-Multiple field, the SaferMe report's field) and adds
the new one beside it where it cannot (a Visibuild ticket takes attachment keys only when it is
made), and its ids say which.

Resends are bounded: a file rewritten after each of ``MAX_RESENDS`` sends is not a finished file
that changed once but one that something keeps rewriting; it goes to failed/ with the reason
rather than being sent again and again. Pure functions over the journal's vendor ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_RESENDS = 3
STALE = "stale"  # the ids of each earlier send of this job, oldest first
# What a resend's link answers: the stale ids it took off the record, or those it could not.
REPLACED = "replaced"
STALE_KEPT = "stale_kept"


def stale_sends(ids: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The ids of every earlier send of this job whose bytes went stale, oldest first."""
    earlier = ids.get(STALE)
    if not isinstance(earlier, list):
        return []
    return [send for send in earlier if isinstance(send, Mapping)]


def stale_values(ids: Mapping[str, Any], key: str) -> list[str]:
    """Every value ``key`` had in an earlier send (e.g. the stale attachment ids), as text, once each."""
    values: list[str] = []
    for send in stale_sends(ids):
        value = send.get(key)
        if value is not None and str(value) not in values:
            values.append(str(value))
    return values


def is_resend(ids: Mapping[str, Any]) -> bool:
    return bool(stale_sends(ids))


def ids_for_resend(ids: Mapping[str, Any]) -> dict[str, Any] | None:
    """The vendor ids a resend starts from: the last send's ids set aside as stale, nothing else.

    None once ``MAX_RESENDS`` sends have gone stale: the file is not sent again.
    """
    earlier = stale_sends(ids)
    if len(earlier) >= MAX_RESENDS:
        return None
    last = {key: value for key, value in ids.items() if key != STALE}
    return {STALE: [*earlier, last]}


def described(ids: Mapping[str, Any]) -> str:
    """The ids a person looks for at the vendor (``attachment_id a-1, ticket_id 7``), or a pointer to the log."""
    named = [f"{key} {value}" for key, value in sorted(ids.items())
             if key != STALE and (key.endswith("id") or key.endswith("_key")) and value is not None]
    return ", ".join(named) or "see the log"
