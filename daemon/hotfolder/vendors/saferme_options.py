"""The keys a ``vendor: saferme`` target takes; its record folders are report ids."""

from __future__ import annotations

from collections.abc import Mapping

from hotfolder.options import Option, duration, id_text, integer, nonempty_text, required, secret
from hotfolder.vendors.spec import VendorSpec

OPTIONS: Mapping[str, Option] = {
    "token": secret(required=True),
    "team_id": required(id_text),
    "app_id": Option(nonempty_text, default="com.thundermaps.saferme"),
    "field": required(nonempty_text),
    "installation_id": Option(nonempty_text),
    "poll_attempts": Option(integer(1), default=20),
    "poll_interval": Option(duration(positive=True), default="2s"),
}

SPEC = VendorSpec("saferme", OPTIONS, adapter="hotfolder.vendors.saferme:SaferMe")
