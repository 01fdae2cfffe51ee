"""daemon.layout: where a file sits ⇄ where it goes, and which names are refused."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotfolder.config import parse_settings
from hotfolder.layout import (
    LayoutError,
    Placement,
    inbox_path,
    outcome_path,
    place,
    validate_record_id,
    validate_segment,
)

INBOX = Path("/srv/in")
DONE = Path("/srv/done")
TARGETS = parse_settings(
    {
        "inbox": str(INBOX),
        "done": str(DONE),
        "failed": "/srv/failed",
        "journal": "/var/lib/hotfolder/journal.db",
        "targets": {
            "fulcrum": {"vendor": "fulcrum", "url": "https://h", "token": "t", "field": "6ca0"},
            "layers": {"vendor": "fulcrum-layers", "url": "https://h", "token": "t"},
            "visibuild": {"vendor": "visibuild", "url": "https://h", "token": "t"},
            "saferme": {"vendor": "saferme", "url": "https://h", "token": "t", "team_id": 1, "field": "f"},
            "espocrm": {
                "vendor": "espocrm",
                "url": "https://h",
                "api_key": "k",
                "entity": "Note",
                "field": "attachments",
                "field_type": "attachments",
            },
        },
    },
    {},
).targets


def placed(relative: str) -> Placement:
    return place(INBOX, INBOX / relative, TARGETS)


def refusal(relative: str | Path) -> str:
    path = relative if isinstance(relative, Path) else INBOX / relative
    with pytest.raises(LayoutError) as caught:
        place(INBOX, path, TARGETS)
    return caught.value.reason


# --- placement per vendor ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "target", "record", "group", "name"),
    [
        ("fulcrum/rec-1/photo.jpg", "fulcrum", "rec-1", None, "photo.jpg"),
        ("saferme/9001/site.png", "saferme", "9001", None, "site.png"),
        ("espocrm/64f0a1b2c3/contract.pdf", "espocrm", "64f0a1b2c3", None, "contract.pdf"),
        ("layers/roads.mbtiles", "layers", None, None, "roads.mbtiles"),
        ("visibuild/proj-7/crack.jpg", "visibuild", "proj-7", None, "crack.jpg"),
        ("visibuild/proj-7/Level 2 defects/crack.jpg", "visibuild", "proj-7", "Level 2 defects", "crack.jpg"),
    ],
)
def test_place_per_vendor(
    relative: str, target: str, record: str | None, group: str | None, name: str
) -> None:
    placement = placed(relative)
    assert (placement.target, placement.record, placement.group, placement.name) == (
        target,
        record,
        group,
        name,
    )
    assert placement.relpath == PurePosixPath(relative)
    assert inbox_path(INBOX, placement) == INBOX / relative
    assert outcome_path(DONE, placement) == DONE / relative


@pytest.mark.parametrize(
    ("relative", "words"),
    [
        ("fulcrum/photo.jpg", "file directly in the target folder has no record folder"),
        ("saferme/photo.jpg", "has no record folder"),
        ("visibuild/photo.jpg", "has no record folder"),
        ("fulcrum/rec-1/extra/photo.jpg", "too deep"),
        ("espocrm/rec/a/b.pdf", "too deep"),
        ("visibuild/p/group/deeper/x.jpg", "too deep"),
        ("layers/sub/roads.mbtiles", "too deep"),
        ("fulcrum", "target folder itself"),
        (
            "dropbox/rec/x.jpg",
            "unknown target 'dropbox' (configured: espocrm, fulcrum, layers, saferme, visibuild)",
        ),
    ],
)
def test_wrong_depth_or_target(relative: str, words: str) -> None:
    reason = refusal(relative)
    assert words in reason
    assert str(INBOX / relative) in reason  # the sentence names the file


def test_outside_the_inbox() -> None:
    assert "outside the inbox" in refusal(Path("/srv/done/fulcrum/rec/x.jpg"))
    assert "outside the inbox" in refusal(Path("/srv/inbox-other/fulcrum/rec/x.jpg"))
    assert "inbox itself" in refusal(INBOX)


def test_dot_dot_is_refused_not_followed() -> None:
    assert "relative folder reference" in refusal(Path(f"{INBOX}/fulcrum/../../etc/passwd"))


def test_target_names_are_case_sensitive() -> None:
    assert "unknown target 'Fulcrum'" in refusal("Fulcrum/rec/x.jpg")


# --- hostile names -------------------------------------------------------------------------------------

NOT_UTF8 = os.fsdecode(b"bad\xffname")


@pytest.mark.parametrize(
    ("segment", "words"),
    [
        ("", "is empty"),
        (".", "relative folder reference"),
        ("..", "relative folder reference"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("nul\x00byte", "control character"),
        ("line\nbreak", "control character"),
        ("esc\x1b[31m", "control character"),
        ("del\x7f", "control character"),
        ("c1\x9b", "control character"),
        (NOT_UTF8, "not valid UTF-8"),
        (os.fsdecode(b"\xff"), "not valid UTF-8"),
        ("lone\ud800", "not valid UTF-8"),
        ("x" * 256, "longer than 255 bytes"),
        ("é" * 128, "longer than 255 bytes"),  # 128 characters, 256 bytes
        (" leading", "whitespace"),
        ("trailing ", "whitespace"),
        ("trailing\u00a0", "whitespace"),
    ],
)
def test_validate_segment_refuses(segment: str, words: str) -> None:
    with pytest.raises(LayoutError) as caught:
        validate_segment(segment, "record id")
    assert caught.value.reason.startswith("record id ")
    assert words in caught.value.reason
    # The offending name is shown escaped: no raw control character reaches a log line.
    assert not any(unicodedata.category(char) in ("Cc", "Cs") for char in caught.value.reason)


@pytest.mark.parametrize(
    "segment",
    [
        "x" * 255,
        "é" * 127,
        "50%25 off",
        "%2e%2e",
        "%2F",
        "a%00b",
        "データ.jpg",
        "emoji 📷.jpg",
        ".hidden",  # the watcher's ignore rules decide about dot files, not the layout
        "name with  inner  spaces",
        "semi;colon&amp=1?#",
    ],
)
def test_validate_segment_accepts(segment: str) -> None:
    validate_segment(segment, "file name")
    validate_record_id(segment)
    assert placed(f"fulcrum/{segment}/{segment}").record == segment


@pytest.mark.parametrize("where", ["record", "group", "name"])
def test_hostile_names_refused_at_every_level(where: str) -> None:
    parts = {"record": "p", "group": "g", "name": "x.jpg"}
    parts[where] = "bad\x00"
    reason = refusal(f"visibuild/{parts['record']}/{parts['group']}/{parts['name']}")
    assert "control character" in reason
    assert "\\x00" in reason  # named, escaped


def test_not_utf8_file_name_refused_in_place() -> None:
    assert "not valid UTF-8" in refusal(f"fulcrum/rec/{NOT_UTF8}.jpg")


def test_nfc_and_nfd_are_both_accepted_and_distinct() -> None:
    nfc = unicodedata.normalize("NFC", "café")
    nfd = unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    first, second = placed(f"fulcrum/{nfc}/{nfc}.jpg"), placed(f"fulcrum/{nfd}/{nfd}.jpg")
    assert (first.record, second.record) == (nfc, nfd)
    assert first.name == f"{nfc}.jpg" and second.name == f"{nfd}.jpg"
    assert outcome_path(DONE, first) != outcome_path(DONE, second)


def test_percent_encodings_are_kept_verbatim() -> None:
    placement = placed("fulcrum/rec%2F1/a%20b%2e%2e.jpg")
    assert (placement.record, placement.name) == ("rec%2F1", "a%20b%2e%2e.jpg")


def test_outcome_path_refuses_a_hand_made_escape() -> None:
    escape = Placement("fulcrum", "..", None, "passwd", PurePosixPath("fulcrum/../passwd"))
    with pytest.raises(LayoutError):
        outcome_path(DONE, escape)
    with pytest.raises(LayoutError):
        outcome_path(DONE, Placement("fulcrum", "rec", None, "a/b", PurePosixPath("fulcrum/rec/a/b")))


# --- round trip ----------------------------------------------------------------------------------------


def _accepted(value: str) -> bool:
    try:
        validate_segment(value, "segment")
    except LayoutError:
        return False
    return True


# All of Unicode plus lone surrogates (which st.characters leaves out unless asked), so that
# validate_segment, not the strategy, decides what is a segment.
_any_char = st.one_of(st.characters(exclude_categories=()), st.characters(categories=["Cs"]))
segments = st.text(_any_char, min_size=1, max_size=40).filter(_accepted)


@settings(max_examples=300, deadline=None)
@given(record=segments, group=st.one_of(st.none(), segments), name=segments)
def test_accepted_segments_round_trip(record: str, group: str | None, name: str) -> None:
    target = "visibuild" if group is not None else "fulcrum"
    parts = [target, record, *([group] if group is not None else []), name]
    placement = place(INBOX, INBOX.joinpath(*parts), TARGETS)
    assert (placement.target, placement.record, placement.group, placement.name) == (
        target,
        record,
        group,
        name,
    )
    assert placement.relpath.parts == tuple(parts)
    for root in (INBOX, DONE):
        path = outcome_path(root, placement)
        assert path.relative_to(root).parts == tuple(parts)
        again = place(root, path, TARGETS)
        assert again == placement


@settings(max_examples=100, deadline=None)
@given(name=segments)
def test_layers_round_trip(name: str) -> None:
    placement = place(INBOX, INBOX / "layers" / name, TARGETS)
    assert (placement.record, placement.group, placement.name) == (None, None, name)
    assert outcome_path(DONE, placement) == DONE / "layers" / name
