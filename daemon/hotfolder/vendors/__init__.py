"""Vendor adapters, one module each; ``adapter_class`` maps a target's ``vendor`` key to its class.

Modules are imported on first use, so a daemon with only Fulcrum targets never loads the others.
"""

from __future__ import annotations

import importlib

from hotfolder.vendors.base import StepContext, Vendor

ADAPTERS: dict[str, str] = {
    "fulcrum": "hotfolder.vendors.fulcrum:Fulcrum",
    "fulcrum-layers": "hotfolder.vendors.fulcrum_layers:FulcrumLayers",
    "visibuild": "hotfolder.vendors.visibuild:Visibuild",
    "saferme": "hotfolder.vendors.saferme:SaferMe",
    "espocrm": "hotfolder.vendors.espocrm:EspoCRM",
}


def adapter_class(vendor: str) -> type[Vendor]:
    try:
        module_name, class_name = ADAPTERS[vendor].split(":")
    except KeyError:
        raise ValueError(f"unknown vendor '{vendor}' (known: {', '.join(sorted(ADAPTERS))})") from None
    cls: type[Vendor] = getattr(importlib.import_module(module_name), class_name)
    return cls


__all__ = ["ADAPTERS", "StepContext", "Vendor", "adapter_class"]
