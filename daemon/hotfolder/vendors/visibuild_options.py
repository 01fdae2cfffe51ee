"""The keys a ``vendor: visibuild`` target takes, and the rule between its two kinds of credential.

Files sit in project folders (``inbox/<target>/<project>/``), or one level deeper in a group folder
whose files become one ticket (``ticket.yaml`` beside them holds its fields).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hotfolder.errors import ConfigError
from hotfolder.options import Option, json_value, nonempty_text, refuse, secret, template, url
from hotfolder.vendors.spec import Layout, VendorSpec

# Ticket fields hotfolder fills in itself: neither the target's ``ticket`` nor a ticket.yaml may set them.
SET_BY_HOTFOLDER: Mapping[str, str] = {
    "projectId": "the project is the record folder",
    "attachmentKeys": "hotfolder fills in the uploaded attachments",
}
# The target's ``ticket`` may not set the title either: title_template makes it (a ticket.yaml may).
_TICKET_OWN_FIELDS: Mapping[str, str] = {"title": "use title_template", **SET_BY_HOTFOLDER}


def _ticket(value: object, key: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise refuse(key, "a mapping of extra ticket fields", value)
    for name in value:
        if name in _TICKET_OWN_FIELDS:
            raise ConfigError(f"{key}.{name}", f"is set by hotfolder, not here: {_TICKET_OWN_FIELDS[name]}")
    frozen: Mapping[str, Any] = json_value(value, key)
    return frozen


OPTIONS: Mapping[str, Option] = {
    # Either a long-lived token or client credentials: _one_kind_of_credential checks which.
    "token": secret(),
    "client_id": Option(nonempty_text),
    "client_secret": secret(),
    "token_url": Option(url),
    "title_template": Option(template, default="{stem}"),
    "ticket": Option(_ticket, default={}),
}


def _one_kind_of_credential(options: Mapping[str, Any], key: str) -> None:
    has_token = options["token"] is not None
    has_id, has_secret = options["client_id"] is not None, options["client_secret"] is not None
    if has_token and (has_id or has_secret):
        raise ConfigError(f"{key}.token", "give either token or client_id with client_secret, not both")
    if not has_token and not (has_id or has_secret):
        raise ConfigError(key, "needs credentials: either token, or both client_id and client_secret")
    if has_id != has_secret:
        missing = "client_secret" if has_id else "client_id"
        raise ConfigError(f"{key}.{missing}", "is required when the other client credential is given")
    if has_token and options["token_url"] is not None:
        raise ConfigError(f"{key}.token_url", "is only used with client_id and client_secret")


SPEC = VendorSpec(
    "visibuild",
    OPTIONS,
    adapter="hotfolder.vendors.visibuild:Visibuild",
    rule=_one_kind_of_credential,
    layout=Layout((3, 4), "inbox/<target>/<project>/<file> or inbox/<target>/<project>/<folder>/<file>"),
)
