"""The Visibuild simulator (being built: routes are added by its module's author)."""

from __future__ import annotations

from typing import Any

from .s3 import S3Service
from .server import Router


class VisibuildService:
    def __init__(self, s3: S3Service) -> None:
        self.s3 = s3
        self.base_url = ""

    def register(self, router: Router) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {}

    def describe(self) -> list[str]:
        return []
