"""The keys a ``vendor: fulcrum-layers`` target takes. Its files sit right in the target folder:
every ``.mbtiles`` file becomes a layer of the account, so there is no record level."""

from __future__ import annotations

from collections.abc import Mapping

from hotfolder.options import Option, secret, template
from hotfolder.vendors.spec import Layout, VendorSpec

OPTIONS: Mapping[str, Option] = {
    "token": secret(required=True),
    "name_template": Option(template, default="{stem}"),
}

SPEC = VendorSpec(
    "fulcrum-layers",
    OPTIONS,
    adapter="hotfolder.vendors.fulcrum_layers:FulcrumLayers",
    layout=Layout((2,), "inbox/<target>/<file>"),
)
