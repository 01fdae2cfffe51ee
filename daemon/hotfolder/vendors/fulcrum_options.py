"""The keys a ``vendor: fulcrum`` target takes, and which adapter serves it.

One table for both behaviours, as targets have always been written: ``kind: photo`` is served by
:class:`~hotfolder.vendors.fulcrum_photos.FulcrumPhotos`, anything else by
:class:`~hotfolder.vendors.fulcrum.FulcrumAttachments`. ``caption`` is read by photos only; an
attachments target that sets it is not refused (it never was).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hotfolder.errors import ConfigError
from hotfolder.options import Option, boolean, choice, nonempty_text, required, secret, template
from hotfolder.vendors.spec import VendorSpec

ATTACHMENTS = "hotfolder.vendors.fulcrum:FulcrumAttachments"
PHOTOS = "hotfolder.vendors.fulcrum_photos:FulcrumPhotos"

OPTIONS: Mapping[str, Option] = {
    "token": secret(required=True),
    "field": required(nonempty_text),
    "owner": Option(choice("record", "form"), default="record"),
    "kind": Option(choice("attachment", "photo"), default="attachment"),
    "caption": Option(template, default=""),
    "skip_workflows": Option(boolean, default=False),
    "skip_webhooks": Option(boolean, default=False),
}


def _photos_belong_to_records(options: Mapping[str, Any], key: str) -> None:
    if options["kind"] == "photo" and options["owner"] == "form":
        raise ConfigError(
            f"{key}.owner", "expected record for kind photo (photos belong to records), found form"
        )


def _adapter(options: Mapping[str, Any]) -> str:
    return PHOTOS if options["kind"] == "photo" else ATTACHMENTS


SPEC = VendorSpec("fulcrum", OPTIONS, adapter=_adapter, rule=_photos_belong_to_records)
