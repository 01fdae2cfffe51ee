"""What a vendor declares about itself without importing its adapter: its options, its rule, its class.

Each ``vendors/<name>_options.py`` makes one :class:`VendorSpec`; the registry (``vendors/__init__.py``)
lists them. The config, the layout and the log redactor read specs, and they must stay light
(``hotfolder check-config`` loads no HTTP machinery), so the adapter class is named by a dotted path
and imported only when a target is built (:func:`hotfolder.vendors.adapter_class`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from hotfolder.options import Option

# A check across keys, run once every key of the target is parsed: (options, "targets.<name>") -> None;
# it raises ConfigError naming the key that has to change.
Rule = Callable[[Mapping[str, Any], str], None]


@dataclass(frozen=True)
class Layout:
    """Where a vendor's files sit below the inbox, as :mod:`hotfolder.layout` places them."""

    depths: tuple[int, ...]  # path segments below the inbox, target and file name included
    shape: str  # said in a refusal: "inbox/<target>/<record>/<file>"

    @property
    def has_records(self) -> bool:
        """Whether the folders right under ``inbox/<target>/`` are record ids."""
        return min(self.depths) >= 3


RECORD_FOLDERS = Layout((3,), "inbox/<target>/<record>/<file>")


@dataclass(frozen=True)
class VendorSpec:
    name: str  # what a target's ``vendor`` key says
    options: Mapping[str, Option]  # the vendor's own keys, in the order they are read
    # "module:Class" of the adapter, or a function choosing it from the parsed options (Fulcrum's kind).
    adapter: str | Callable[[Mapping[str, Any]], str]
    rule: Rule | None = None
    layout: Layout = RECORD_FOLDERS

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def adapter_path(self, options: Mapping[str, Any]) -> str:
        return self.adapter if isinstance(self.adapter, str) else self.adapter(options)
