"""`hotfolder check-config --online` against the simulator over real HTTP: every vendor's check verb.

The installation is the demo's (one target per vendor and kind, its records seeded, its record
folders in the inbox), so a good file must pass for every vendor; then one thing at a time is made
wrong. Every run must leave the simulated vendors exactly as they were, and read only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hotfolder import demo
from hotfolder.sandbox import Sandbox
from tests.harness import ROOT, env_for_daemon

TARGETS = tuple(demo.demo_targets("http://unused"))


@dataclass
class Installation:
    sandbox: Sandbox
    root: Path
    config: dict[str, Any]

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    def check(self, **target_changes: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """Run the command on the config with these targets' keys changed; the vendors must be left as they were."""
        config = yaml.safe_load(yaml.safe_dump(self.config))
        for name, changes in target_changes.items():
            config["targets"][name].update(changes)
        path = self.root / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        before, seen = _vendor_state(self.sandbox), len(self.sandbox.requests())
        result = subprocess.run(
            [sys.executable, "-m", "hotfolder", "check-config", "--online", str(path)],
            capture_output=True, text=True, env=env_for_daemon(), cwd=ROOT, timeout=60,
        )
        assert _vendor_state(self.sandbox) == before, "the check changed something at a vendor"
        calls = {(r["method"], r["path"]) for r in self.sandbox.requests()[seen:]}
        assert {method for method, path in calls if path != "/oauth/token"} <= {"GET"}, calls
        return result


def _vendor_state(sandbox: Sandbox) -> dict[str, Any]:
    state = sandbox.state()
    # A client-credentials check gets an access token (the one POST it makes): counted, but not a thing made.
    state["visibuild"].pop("tokens_issued")
    return state


@pytest.fixture
def installation(tmp_path: Path) -> Iterator[Installation]:
    with Sandbox(tmp_path / "simulator") as sandbox:
        root = tmp_path / "site"
        root.mkdir()
        demo.write_demo_config(root, sandbox.url)
        demo.seed(sandbox, root / "inbox")
        config = yaml.safe_load((root / "config.yaml").read_text())
        yield Installation(sandbox, root, config)


def _lines(text: str) -> dict[str, str]:
    """Target name → the rest of its line."""
    return dict(line.split(": ", 1) for line in text.splitlines() if line.split(": ", 1)[0] in TARGETS)


def test_a_good_config_passes_with_one_ok_line_per_target(installation: Installation) -> None:
    result = installation.check()
    assert result.returncode == 0, result.stderr
    lines = _lines(result.stdout)
    assert set(lines) == set(TARGETS)
    assert all(line.startswith("ok — ") for line in lines.values()), result.stdout
    assert "field 6ca0 is an attachment field of form 'Site inspections'" in lines["fulcrum"]
    assert "field 9f1b is a photo field" in lines["fulcrum-camera"]
    assert "FileUpload field of report 7001" in lines["saferme"]
    assert "not checked" in lines["visibuild"]  # says what Visibuild offers no read for


def test_a_wrong_token_fails_naming_the_target(installation: Installation) -> None:
    result = installation.check(**{"fulcrum-camera": {"token": "not-the-token"}, "espocrm-notes": {"api_key": "nope"}})
    assert result.returncode == 1
    problems = _lines(result.stderr)
    assert set(problems) == {"fulcrum-camera", "espocrm-notes"}, result.stderr
    assert all(problem.startswith("credentials refused") and "401" in problem for problem in problems.values())
    assert "not-the-token" not in result.stdout + result.stderr
    assert set(_lines(result.stdout)) == set(TARGETS) - set(problems)  # the others still checked, and ok


def test_wrong_client_credentials_fail_at_the_token(installation: Installation) -> None:
    result = installation.check(visibuild={"client_secret": "wrong-secret"})
    assert result.returncode == 1
    assert "visibuild: credentials refused: get access token: HTTP 401" in result.stderr
    assert "wrong-secret" not in result.stderr


@pytest.mark.parametrize(
    ("target", "changes", "says"),
    [
        ("fulcrum", {"field": "6cb0"}, "fulcrum: field 6cb0 is in no form of this account"),
        ("fulcrum-camera", {"field": "6ca0"},
         "fulcrum-camera: field 6ca0 is not a photo field of form 'Site inspections' (form-1) "
         "(its type is AttachmentField)"),
        ("saferme", {"field": "site-fotos"}, "saferme: report 7001 has no form field 'site-fotos'"),
        ("espocrm-documents", {"field": "files"}, "espocrm-documents: Document.files is not a field that holds files"),
        ("espocrm-notes", {"field_type": "file"},
         "espocrm-notes: Note.attachments is an Attachment-Multiple field (Note note-1 has attachmentsIds): "
         "field_type should be attachments"),
    ],
)
def test_a_wrong_field_fails_naming_it(installation: Installation, target: str, changes: dict[str, Any],
                                       says: str) -> None:
    result = installation.check(**{target: changes})
    assert result.returncode == 1
    assert says in result.stderr
    assert set(_lines(result.stderr)) == {target}


def test_without_a_record_folder_the_credentials_are_checked_and_the_field_is_said_unchecked(
    installation: Installation,
) -> None:
    shutil.rmtree(installation.inbox / "saferme")
    result = installation.check(saferme={"field": "site-fotos"})
    assert result.returncode == 0, result.stderr
    assert "field site-fotos not checked" in _lines(result.stdout)["saferme"]
    result = installation.check(saferme={"token": "wrong-saferme-token"})
    assert result.returncode == 1 and "saferme: credentials refused" in result.stderr


def test_a_record_folder_the_vendor_does_not_know_is_named(installation: Installation) -> None:
    shutil.rmtree(installation.inbox / "espocrm-documents" / "doc-1")
    (installation.inbox / "espocrm-documents" / "doc-404").mkdir()
    (installation.inbox / "espocrm-documents" / ".hidden").mkdir()  # ignored, as the watcher ignores it
    result = installation.check()
    assert result.returncode == 1
    assert "espocrm-documents: no Document doc-404 (the folder inbox/espocrm-documents/doc-404/)" in result.stderr
