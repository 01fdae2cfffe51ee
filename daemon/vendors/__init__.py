"""Vendor adapters, one module each; ``adapter_class`` maps a target's ``vendor`` key to its class."""

from __future__ import annotations

from daemon.vendors.base import StepContext, Vendor
from daemon.vendors.fulcrum import Fulcrum

ADAPTERS: dict[str, type[Vendor]] = {
    Fulcrum.vendor_name: Fulcrum,
}


def adapter_class(vendor: str) -> type[Vendor]:
    try:
        return ADAPTERS[vendor]
    except KeyError:
        raise ValueError(f"vendor '{vendor}' has no adapter yet (available: {', '.join(sorted(ADAPTERS))})") from None


__all__ = ["ADAPTERS", "StepContext", "Vendor", "adapter_class"]
