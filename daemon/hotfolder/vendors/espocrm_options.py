"""The keys a ``vendor: espocrm`` target takes; its record folders are record ids of ``entity``."""

from __future__ import annotations

from collections.abc import Mapping

from hotfolder.options import Option, choice, nonempty_text, required, secret, size
from hotfolder.vendors.spec import VendorSpec

OPTIONS: Mapping[str, Option] = {
    "api_key": secret(required=True),
    "secret": secret(),  # present: HMAC authentication instead of X-Api-Key
    "entity": required(nonempty_text),
    "field": required(nonempty_text),
    "field_type": required(choice("file", "attachments")),
    "chunk_threshold": Option(size(positive=False), default="20MB"),
    "chunk_size": Option(size(positive=True), default="4MB"),
}

SPEC = VendorSpec("espocrm", OPTIONS, adapter="hotfolder.vendors.espocrm:EspoCRM")
