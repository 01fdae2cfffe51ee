"""The vendors hotfolder knows: one line each in ``REGISTRY``.

A vendor is its adapter (``vendors/<name>.py``: the verbs, over HTTP), its options beside it
(``vendors/<name>_options.py``: the keys its targets take, the rule between them, the adapter class
that serves a target, where its files sit), its simulator (``sandbox/<name>.py``), its facts in
``docs/vendors.md``, and its line below. The vendor names, their option tables and the names of the
secret keys are derived from here and listed nowhere else.

Only the options modules are imported here: the config and the log redactor read them, and must stay
light. An adapter, with its HTTP machinery, is imported by :func:`adapter_class` when a target is
built, so a daemon with only Fulcrum targets never loads the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from hotfolder.options import Option
from hotfolder.vendors import (
    espocrm_options,
    fulcrum_layers_options,
    fulcrum_options,
    saferme_options,
    visibuild_options,
)
from hotfolder.vendors.spec import VendorSpec

if TYPE_CHECKING:  # the config imports this module: at run time, importing it back would be a cycle
    from hotfolder.config import TargetSettings
    from hotfolder.vendors.base import Vendor

REGISTRY: Mapping[str, VendorSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            fulcrum_options.SPEC,
            fulcrum_layers_options.SPEC,
            visibuild_options.SPEC,
            saferme_options.SPEC,
            espocrm_options.SPEC,
        )
    }
)

VENDORS: tuple[str, ...] = tuple(REGISTRY)
VENDOR_OPTIONS: Mapping[str, Mapping[str, Option]] = MappingProxyType(
    {name: spec.options for name, spec in REGISTRY.items()}
)
# The keys that hold credentials in any vendor's table: the log redactor blanks values under them.
SECRET_KEYS: frozenset[str] = frozenset(
    name for table in VENDOR_OPTIONS.values() for name, option in table.items() if option.secret
)


def adapter_class(target: TargetSettings) -> type[Vendor]:
    """The class that serves this target (for Fulcrum, its ``kind`` decides), imported on first use."""
    try:
        spec = REGISTRY[target.vendor]
    except KeyError:
        raise ValueError(f"unknown vendor '{target.vendor}' (known: {', '.join(sorted(REGISTRY))})") from None
    module_name, class_name = spec.adapter_path(target.options).split(":")
    cls: type[Vendor] = getattr(importlib.import_module(module_name), class_name)
    return cls


__all__ = ["REGISTRY", "SECRET_KEYS", "VENDORS", "VENDOR_OPTIONS", "adapter_class"]
