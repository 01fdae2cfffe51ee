"""What every Fulcrum adapter shares: the API root, the token header, and Fulcrum's paged lists.

API facts (docs/vendors.md, Fulcrum): every call carries ``X-ApiToken`` and ``Accept:
application/json``; lists (``layers.json``, ``forms.json``) take ``page`` and ``per_page`` and say
``total_pages``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hotfolder.vendors.base import Vendor, require

API = "/api/v2"
PER_PAGE = 1000
MAX_PAGES = 100  # a listing longer than this is not read further


class FulcrumApi(Vendor):
    """Base of the Fulcrum adapters (attachments, photos, layers)."""

    @property
    def _headers(self) -> dict[str, str]:
        return {"X-ApiToken": self.target.option("token"), "Accept": "application/json"}

    def _listing(self, path: str, key: str, what: str, *, per_page: int = PER_PAGE) -> Iterator[dict[str, Any]]:
        """Every item (with an id) of the list at ``{API}{path}``, page by page, at most MAX_PAGES pages."""
        for page in range(1, MAX_PAGES + 1):
            answer = self.call(
                "GET", f"{API}{path}", what, params={"page": page, "per_page": per_page}, headers=self._headers
            ).json()
            items = require(answer, key, what=what)
            yield from (item for item in items if isinstance(item, dict) and item.get("id"))
            total_pages = answer.get("total_pages")
            if not isinstance(total_pages, int) or page >= total_pages or not items:
                return
