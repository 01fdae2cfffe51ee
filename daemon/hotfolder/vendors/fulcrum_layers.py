"""Fulcrum MBTiles map layers: ``inbox/<target>/<name>.mbtiles`` → one new layer per file.

Steps (docs/vendors.md, Fulcrum layers):

* presign: ``GET /api/v2/file/upload_url.json`` (``file``, singular) → ``{"file": {"url", "key"}}``;
  the URL is a credential and stays in memory, the key goes to the journal;
* upload: a presigned S3 PUT of the file, streamed;
* link: ``POST /api/v2/layers.json`` ``{"layer": {"key", "name", "type": "mbtiles"}}`` → ``{"layer": {"id"}}``.
  A 422 ``{"layer": {"errors": {…}}}`` is a refusal for good, with the field errors as the reason.

No duplicate layer after a crash
--------------------------------
Creating a layer is not idempotent, and the API takes no client-made id. So before the POST the
adapter commits ``layer_create_attempted`` (with the time and the name it will send). A later attempt
that finds it set first lists the layers and adopts one it created, instead of creating another.

The documented layer object does not carry the upload ``key`` (only name, type, source, file_size,
created_at, …), so the rule is:

1. a layer whose ``key`` equals ours, or whose ``source`` contains it, is ours (if the vendor echoes
   the key, that is proof);
2. otherwise a layer of type ``mbtiles`` with exactly our name, whose ``file_size`` is our file's size
   (a missing or 0 size, i.e. still processing, does not disqualify), created no earlier than
   ``CLOCK_SKEW`` before our first attempt. Of several, the newest is taken.

Known limits: a POST still in flight when the check runs (held by a proxy, say) may land after it, and
another layer made by someone else in that window with the same name and size would be adopted. Layer
links to one host are serialised by the runner (``link_key``), so two of our own jobs never race here.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from hotfolder.errors import StepError
from hotfolder.pipeline import OutcomeKind
from hotfolder.vendors.base import Ids, StepContext, require
from hotfolder.vendors.fulcrum_api import API, FulcrumApi

SUFFIX = ".mbtiles"
CLOCK_SKEW = 600.0  # seconds our clock and the vendor's may disagree by when comparing created_at


class FulcrumLayers(FulcrumApi):
    digests = ("sha256",)

    # -- the verbs ------------------------------------------------------------------------------

    def presign(self, ctx: StepContext) -> Ids:
        if Path(ctx.name).suffix.lower() != SUFFIX:
            raise StepError(
                OutcomeKind.PERMANENT, f"{ctx.name}: a layers target takes {SUFFIX} files only, refused"
            )
        answer = self.call("GET", f"{API}/file/upload_url.json", "presign", headers=self._headers).json()
        self.keep_presigned_put(ctx, require(answer, "file", "url", what="presign"))
        return {"file_key": require(answer, "file", "key", what="presign")}

    def upload(self, ctx: StepContext) -> Ids:
        return self.upload_presigned_put(ctx)

    def link(self, ctx: StepContext) -> Ids:
        if ctx.ids.get("layer_id"):
            return {"layer_id": ctx.ids["layer_id"]}
        key = str(ctx.ids["file_key"])
        if ctx.ids.get("layer_create_attempted"):
            name = str(ctx.ids.get("layer_name") or self._name(ctx))
            since = ctx.ids.get("layer_create_attempted_at")
            found = self._find_ours(key, name, ctx.identity.size, since if isinstance(since, int | float) else None)
            if found is not None:
                return {"layer_id": found, "layer_adopted": True}
        else:
            name = self._name(ctx)
            # Durable before the POST: after a crash the next attempt looks before it creates.
            ctx.remember({"layer_create_attempted": True, "layer_create_attempted_at": time.time(), "layer_name": name})
        body = {"layer": {"key": key, "name": name, "type": "mbtiles"}}
        answer = self.call("POST", f"{API}/layers.json", "link: create layer", json=body, headers=self._headers)
        return {"layer_id": require(answer.json(), "layer", "id", what="link: create layer")}

    def link_key(self, ctx: StepContext) -> tuple[str, ...]:
        # Every layer create of the account in turn, so that no two of ours can be mistaken for each other.
        return ("fulcrum-layers", self.target.url)

    def check(self, record: str | None) -> str:
        next(self._listing("/layers.json", "layers", "check: list layers", per_page=1), None)
        return "token accepted (layers have no field to check)"

    # -- helpers --------------------------------------------------------------------------------

    def _name(self, ctx: StepContext) -> str:
        return str(self.target.option("name_template")).format_map(ctx.template_values())

    def _find_ours(self, key: str, name: str, size: int, since: float | None) -> str | None:
        """The id of the layer an earlier attempt created (see the module's rule), or None.

        A listing longer than fulcrum_api.MAX_PAGES is not searched further (the layer is then created)."""
        candidates: list[dict[str, Any]] = []
        for layer in self._listing("/layers.json", "layers", "link: list layers"):
            if _made_from(layer, key):
                return str(layer["id"])
            if _looks_like_ours(layer, name, size, since):
                candidates.append(layer)
        if not candidates:
            return None
        newest = max(candidates, key=lambda layer: _timestamp(layer.get("created_at")) or 0.0)
        return str(newest["id"])


def _made_from(layer: dict[str, Any], key: str) -> bool:
    source = layer.get("source")
    return layer.get("key") == key or (isinstance(source, str) and key in source)


def _looks_like_ours(layer: dict[str, Any], name: str, size: int, since: float | None) -> bool:
    if layer.get("type") != "mbtiles" or layer.get("name") != name:
        return False
    file_size = layer.get("file_size")
    if isinstance(file_size, int) and file_size and file_size != size:
        return False
    created = _timestamp(layer.get("created_at"))
    return since is None or created is None or created >= since - CLOCK_SKEW


def _timestamp(value: Any) -> float | None:
    """Seconds since the epoch from an ISO 8601 time such as "2014-10-22T17:07:53Z"; None if unreadable."""
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()
