"""A file in a field of a Fulcrum record: what attachments and photos share (the link, the check).

API facts (docs/vendors.md, Fulcrum): records have no optimistic concurrency (``version`` is
read-only, no If-Match, no 409), and both PUT and PATCH replace a field's whole array. So the link
reads the record, appends our item unless an item with our id is already there, and writes the whole
record back; two links to one record never run at once (the runner serialises on ``link_key``). Item
shapes: ``{"attachment_id", "name"}`` in an attachment field, ``{"photo_id", "caption"}`` in a photo
field.

The online check lists the account's forms (``GET /api/v2/forms.json``) and looks for the configured
field key among each form's elements, Sections included: a field inside a repeatable section is
not a field of the record, and the link could not write it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import quote

from hotfolder import resend
from hotfolder.vendors.base import CheckFailed, Ids, StepContext, require
from hotfolder.vendors.fulcrum_api import API, FulcrumApi


class FulcrumRecords(FulcrumApi):
    """Base of the adapters whose files end up in a record's field; subclasses say which kind of item."""

    item_id: ClassVar[str]  # the item's key that holds our id in the field: "attachment_id", "photo_id"
    journal_id: ClassVar[str]  # the job id that holds that id in the journal (its earlier values go stale)
    element_type: ClassVar[str]  # the form element type of a field that holds such items
    field_noun: ClassVar[str]  # "an attachment", for the check's sentences

    @property
    def _headers(self) -> dict[str, str]:
        headers = super()._headers
        if self.target.option("skip_workflows"):
            headers["X-SkipWorkflows"] = "true"
        if self.target.option("skip_webhooks"):
            headers["X-SkipWebhooks"] = "true"
        return headers

    def _record_url(self, ctx: StepContext) -> str:
        # Record ids were validated by layout; percent-encode all the same so nothing can
        # escape the path segment.
        return f"{API}/records/{quote(ctx.record or '', safe='')}.json"

    def link_key(self, ctx: StepContext) -> tuple[str, ...]:
        """One lock per record of the account, not per target: an attachments target and a camera
        target may append to the same record, and two read-modify-writes at once lose one append."""
        return ("fulcrum-record", self.target.url, ctx.record or "")

    def record_item(self, ctx: StepContext) -> dict[str, Any] | None:
        """The item ``ctx``'s link puts in the record's field; None where the link is not to a record."""
        raise NotImplementedError

    def link(self, ctx: StepContext) -> Ids:
        return self.link_many([ctx])[0]

    def combines_links(self, ctx: StepContext) -> bool:
        # A resend takes stale copies off the field: it links on its own.
        return self.record_item(ctx) is not None and not resend.is_resend(ctx.ids)

    def link_many(self, ctxs: Sequence[StepContext]) -> list[Ids]:
        """Put each one's item in the record's field with one GET and at most one PUT.

        An item already in the field, or this file's earlier link under another id, is left as it
        is. A resend's item takes the place of its stale copies (the earlier sends' ids), so the field
        ends with the new bytes once. Earlier links are looked for in the field as read, so two files
        of one batch never count as each other's. The whole record goes back with PUT: PATCH would do
        too, but PUT is what the vendor's own example uses, and both replace the field's whole array.
        """
        id_key = self.item_id
        field_key = self.target.option("field")
        url = self._record_url(ctxs[0])
        answer = self.call("GET", url, "link: read record", headers=self._headers).json()
        record: dict[str, Any] = require(answer, "record", what="link: read record")
        form_values = record.get("form_values") or {}
        found = list(form_values.get(field_key) or [])
        items = list(found)
        answers: list[Ids] = []
        for ctx in ctxs:
            item = self.record_item(ctx)
            assert item is not None, "a link without a record item is made by the subclass itself"
            stale = set(resend.stale_values(ctx.ids, self.journal_id))
            replaced = sorted({str(existing[id_key]) for existing in items if _holds(existing, id_key, stale)})
            items = [existing for existing in items if not _holds(existing, id_key, stale)]
            ours = any(isinstance(existing, dict) and existing.get(id_key) == item[id_key] for existing in items)
            if ours and not replaced:
                answers.append({"linked": True, "link_was_already_there": True})
                continue
            if not ours and not stale:
                earlier = self._earlier_link(ctx, found)
                if earlier is not None:
                    answers.append({"linked": True, "link_was_already_there": True, **earlier})
                    continue
            if not ours:
                items.append(item)
            answers.append({"linked": True, **({resend.REPLACED: replaced} if replaced else {})})
        if items != found:
            record["form_values"] = {**form_values, field_key: items}
            self.call("PUT", url, "link: write record", json={"record": record}, headers=self._headers)
        return answers

    def _earlier_link(self, ctx: StepContext, items: list[Any]) -> Ids | None:
        """Ids naming an item already in the field that is this file's earlier link under another id
        (a job that lost its journal), or None. Only attachments can tell: see FulcrumAttachments."""
        return None

    # -- the online check -----------------------------------------------------------------------

    def check(self, record: str | None) -> str:
        field = str(self.target.option("field"))
        found = [
            (form, kind)
            for form in self._listing("/forms.json", "forms", "check: list forms")
            if (kind := _element_type(form.get("elements"), field)) is not None
        ]
        right = [form for form, kind in found if kind == self.element_type]
        if right:
            more = f" (and {len(right) - 1} more)" if len(right) > 1 else ""
            return f"token accepted; field {field} is {self.field_noun} field of {_form(right[0])}{more}"
        if found:
            form, kind = found[0]
            raise CheckFailed(f"field {field} is not {self.field_noun} field of {_form(form)} (its type is {kind})")
        raise CheckFailed(f"field {field} is in no form of this account (outside repeatable sections)")


def _holds(item: Any, id_key: str, ids: set[str]) -> bool:
    return isinstance(item, dict) and item.get(id_key) is not None and str(item[id_key]) in ids


def _element_type(elements: Any, key: str) -> str | None:
    """The type of the element with this key, searching into Sections (not Repeatables); None if absent."""
    for element in elements if isinstance(elements, list) else ():
        if not isinstance(element, dict):
            continue
        if element.get("key") == key:
            return str(element.get("type"))
        if element.get("type") == "Section" and (inner := _element_type(element.get("elements"), key)):
            return inner
    return None


def _form(form: dict[str, Any]) -> str:
    return f"form {form.get('name')!r} ({form.get('id')})"
