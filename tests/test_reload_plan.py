"""What a reload changes, decided from the running and the re-read settings alone."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hotfolder.config import Settings, parse_settings
from hotfolder.reload import plan_reload


def _settings(tmp_path: Path, targets: dict[str, str], **top: object) -> Settings:
    data: dict[str, object] = {
        "inbox": str(tmp_path / "inbox"), "done": str(tmp_path / "done"), "failed": str(tmp_path / "failed"),
        "journal": str(tmp_path / "journal.db"),
        "targets": {name: {"vendor": "fulcrum", "url": url, "token": "t0ken-1234", "field": "6ca0"}
                    for name, url in targets.items()},
        **top,
    }
    return parse_settings(data, {})


def test_targets_added_removed_and_changed(tmp_path: Path) -> None:
    running = _settings(tmp_path, {"a": "https://a.example", "b": "https://b.example", "c": "https://c.example"})
    loaded = _settings(tmp_path, {"a": "https://a.example", "b": "https://b2.example", "d": "https://d.example"},
                       log_level="debug")
    plan = plan_reload(running, loaded)
    assert (plan.added, plan.removed, plan.changed, plan.needs_restart) == (("d",), ("c",), ("b",), ())
    assert plan.settings.log_level == "debug"
    assert plan.summary() == "added: d; removed: c; changed: b"


def test_keys_only_a_restart_applies_keep_their_running_values(tmp_path: Path) -> None:
    running = _settings(tmp_path, {"a": "https://a.example"})
    loaded = dataclasses.replace(_settings(tmp_path / "elsewhere", {"a": "https://a.example"}, workers=8),
                                 archive_after=running.archive_after)
    plan = plan_reload(running, loaded)
    assert plan.needs_restart == ("inbox", "done", "failed", "journal")
    assert (plan.settings.inbox, plan.settings.journal) == (running.inbox, running.journal)
    assert plan.settings.workers == 8 and plan.changed == ("a",)  # new workers: the client is rebuilt
    assert "waiting for a restart: inbox, done, failed, journal" in plan.summary()


def test_the_endpoint_and_the_node_wait_for_a_restart_too(tmp_path: Path) -> None:
    """The endpoint's socket and token and this node's name and lease were opened with the running
    values: a reload that changes them says so and keeps them."""
    running = _settings(tmp_path, {"a": "https://a.example"}, http={"listen": "127.0.0.1:8765"})
    loaded = _settings(tmp_path, {"a": "https://a.example"}, http={"listen": "127.0.0.1:9999"},
                       node={"name": "scan-2"})
    plan = plan_reload(running, loaded)
    assert plan.needs_restart == ("node", "http")
    assert plan.settings.http == running.http and plan.settings.node == running.node
