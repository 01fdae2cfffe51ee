"""No secret leaves the daemon: whole flows for every vendor, then a search of everything it wrote.

Every vendor is configured with distinctive credentials from ``${VAR}``s, and the simulator is
told the same. ``hotfolder once`` runs twice as a subprocess at ``log_level: debug``: first files
that succeed, some of them on presigned URLs that expire before use (so signed URLs travel through
the retry paths), and a duplicate (so a note file is written); then files each vendor refuses for
good, some with refusals that echo the caller's credentials back. Then the log output, the journal's
bytes (WAL included), every sidecar and note, and ``hotfolder status`` (text and JSON) are searched
for every token, API key, client secret, HMAC secret, the OAuth access tokens the simulator issued,
and every presigned-URL or POST-policy signature it computed.

And TLS: verification is on unless a target turns it off, which is logged with the target's name.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hotfolder import demo
from hotfolder.config import load_settings
from hotfolder.sandbox import Sandbox
from hotfolder.service import make_client
from tests.harness import ROOT, Site, env_for_daemon, simulated_site, write_config

SECRETS = {
    "FULCRUM_TOKEN": "fulcrum-tok-Q7x2Lk9vRw3e",
    "FULCRUM_LAYERS_TOKEN": "layers-tok-Hb8sPq2mZt5c",
    "VISIBUILD_CLIENT_SECRET": "vb-client-secret-Zp4Rw8Kd1n",
    "VISIBUILD_TOKEN": "vb-static-token-Hq2Lm6Ys9a",
    "SAFERME_TOKEN": "saferme-tok-M3n8Jc5Vx0b",
    "ESPO_API_KEY": "espo-api-key-Tt5Gh7Wq2k",
    "ESPO_HMAC_KEY": "espo-hmac-key-Yy6Df3Np8r",
    "ESPO_HMAC_SECRET": "espo-hmac-secret-Uu7Bv4Xs1m",
}
VISIBUILD_CLIENT_ID = "hotfolder-client-7"


def _seed(sandbox: Sandbox, scratch: Path) -> None:
    demo.seed(sandbox, scratch)  # records and reports as for the demo; its inbox folders go to scratch
    sandbox.visibuild.clients = {VISIBUILD_CLIENT_ID: SECRETS["VISIBUILD_CLIENT_SECRET"]}
    sandbox.visibuild.static_tokens = {SECRETS["VISIBUILD_TOKEN"]}
    sandbox.saferme.tokens = {SECRETS["SAFERME_TOKEN"]}
    sandbox.espocrm.api_keys = {SECRETS["ESPO_API_KEY"]: None, SECRETS["ESPO_HMAC_KEY"]: SECRETS["ESPO_HMAC_SECRET"]}


def _targets(url: str) -> dict[str, dict[str, Any]]:
    """The demo's targets, every secret replaced by a ${VAR}, plus Visibuild with a long-lived token."""
    targets: dict[str, dict[str, Any]] = {name: dict(options) for name, options in demo.demo_targets(url).items()}
    for name in ("fulcrum", "fulcrum-forms", "fulcrum-camera"):
        targets[name]["token"] = "${FULCRUM_TOKEN}"
    targets["fulcrum-layers"]["token"] = "${FULCRUM_LAYERS_TOKEN}"
    targets["visibuild"].update(client_id=VISIBUILD_CLIENT_ID, client_secret="${VISIBUILD_CLIENT_SECRET}")
    targets["visibuild-static"] = {"vendor": "visibuild", "url": url, "token": "${VISIBUILD_TOKEN}"}
    targets["saferme"].update(token="${SAFERME_TOKEN}", poll_interval="100ms")
    targets["espocrm-documents"]["api_key"] = "${ESPO_API_KEY}"
    targets["espocrm-notes"].update(api_key="${ESPO_HMAC_KEY}", secret="${ESPO_HMAC_SECRET}")
    return targets


@pytest.fixture
def secret_site(tmp_path: Path) -> Iterator[Site]:
    tokens = (SECRETS["FULCRUM_TOKEN"], SECRETS["FULCRUM_LAYERS_TOKEN"])
    with simulated_site(tmp_path, lambda sb: _seed(sb, tmp_path / "seed-inbox"), fulcrum_tokens=tokens) as site:
        write_config(site.root, site.sandbox.url)
        config = yaml.safe_load(site.config_path.read_text())
        config.update(log_level="debug", targets=_targets(site.sandbox.url),
                      retry={"attempts": 6, "backoff": "50ms", "max_backoff": "500ms"})
        site.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        yield site


def _hotfolder(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {**env_for_daemon(), **SECRETS}
    return subprocess.run([sys.executable, "-m", "hotfolder", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)


def _drop(site: Site, relative: str, data: bytes) -> None:
    target, _, rest = relative.partition("/")
    record, _, name = rest.rpartition("/")
    site.drop(record, name, data, target=target)


def _needles(sandbox: Sandbox) -> dict[str, str]:
    """Every secret to search for, with a label that says what it is (never the value itself)."""
    needles = {f"${{{name}}}": value for name, value in SECRETS.items()}
    # The HMAC header is base64(key + ":" + digest): its first characters encode the key alone.
    hmac_key = SECRETS["ESPO_HMAC_KEY"]
    prefix = hmac_key[: len(hmac_key) // 3 * 3]
    needles["X-Hmac-Authorization prefix"] = base64.b64encode(prefix.encode()).decode()
    for number, token in enumerate(sorted(sandbox.issued_access_tokens())):
        needles[f"Visibuild access token #{number}"] = token
    for number, signature in enumerate(sorted(sandbox.issued_signatures())):
        needles[f"SigV4 signature #{number}"] = signature
    return needles


# Shapes of a signature, whatever its value: a query parameter or a form field with 64 hex digits.
SIGNATURE_SHAPES = (
    re.compile(r"x-amz-signature=[0-9a-f]{64}", re.IGNORECASE),
    re.compile(r"[\"']x-amz-signature[\"']\s*:\s*[\"'][0-9a-f]{64}", re.IGNORECASE),
)


def _leaks(text: str, needles: dict[str, str]) -> list[str]:
    found = [label for label, value in needles.items() if value in text]
    found += [shape.pattern for shape in SIGNATURE_SHAPES if shape.search(text)]
    return found


def test_no_secret_in_logs_journal_sidecars_or_status(secret_site: Site, tmp_path: Path) -> None:
    site, sandbox = secret_site, secret_site.sandbox
    config = str(site.config_path)

    # Run 1: every vendor succeeds; the presigned uploads first meet an expired URL or POST policy.
    sandbox.presign_expires = 2  # whole seconds are signed: 2 leaves a fresh URL at least 1 s to be used
    for method, path, count in (("PUT", r"^/s3/fulcrum-attachments/", 2), ("PUT", r"^/s3/fulcrum-files/", 1),
                                ("PUT", r"^/s3/visibuild-uploads/", 2), ("POST", r"^/s3/saferme-uploads/?$", 1)):
        sandbox.add_fault(method, path, action="delay", delay=2.6, count=count)
    scan = b"%PDF-1.4 scan " + bytes(range(256))
    good = {
        "fulcrum/rec-1001/scan.pdf": scan,
        "fulcrum/rec-1001/scan-again.pdf": scan,  # the same bytes: a duplicate note, not a second upload
        "fulcrum-forms/form-1/guide.pdf": b"%PDF-1.4 guide",
        "fulcrum-camera/rec-1002/site.jpg": b"\xff\xd8\xff\xe0 site",
        "fulcrum-layers/topo.mbtiles": b"SQLite format 3\x00 tiles",
        "visibuild/proj-1/defect.jpg": b"\xff\xd8\xff\xe0 defect",
        "visibuild-static/proj-1/crack.jpg": b"\xff\xd8\xff\xe0 crack",
        "saferme/7001/hazard.png": b"\x89PNG\r\n\x1a\n hazard",
        "espocrm-documents/doc-1/plan.pdf": b"%PDF-1.4 plan",
        "espocrm-notes/note-1/notes.txt": b"inspection notes",
    }
    for relative, data in good.items():
        _drop(site, relative, data)
    first = _hotfolder("once", "-c", config)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for relative, data in good.items():
        assert (site.done / relative).read_bytes() == data, relative
    expired = [r for r in sandbox.requests() if r["path"].startswith("/s3/") and r["status"] == 403]
    assert len(expired) >= 4, "presigned URLs and POST policies expired, and were presigned again"

    # Run 2: each vendor refuses one file for good; some refusals echo the caller's credentials.
    echo = f"token {SECRETS['FULCRUM_TOKEN']} may not write this record"
    sandbox.add_fault("PUT", r"^/api/v2/records/rec-1003\.json$", status=422,
                      body=json.dumps({"record": {"errors": {demo.FIELD: [echo]}}}))
    layers_echo = f"no upload for X-ApiToken {SECRETS['FULCRUM_LAYERS_TOKEN']}"
    sandbox.add_fault("POST", r"^/api/v2/layers\.json$", status=422,
                      body=json.dumps({"layer": {"errors": {"key": [layers_echo]}}}))
    espo_echo = f"key {SECRETS['ESPO_HMAC_KEY']} (secret {SECRETS['ESPO_HMAC_SECRET']}) may not edit note-1"
    sandbox.add_fault("PUT", r"^/api/v1/Note/note-1$", status=403, headers={"X-Status-Reason": espo_echo})
    refused = {
        "fulcrum/rec-1003/refused.pdf": b"echoed token",
        "fulcrum-forms/form-404/refused.pdf": b"no such form",
        "fulcrum-camera/rec-404/refused.jpg": b"\xff\xd8 no such record",
        "fulcrum-layers/refused.mbtiles": b"SQLite format 3\x00 refused",
        "visibuild/proj-404/refused.jpg": b"\xff\xd8 no such project",
        "visibuild-static/proj-404/refused.jpg": b"\xff\xd8 no such project either",
        "saferme/7001/refused.zip": b"PK\x03\x04 a type SaferMe does not take",
        "espocrm-documents/doc-1/refused.exe": b"MZ an extension EspoCRM refuses",
        "espocrm-notes/note-1/refused.txt": b"echoed key and secret",
    }
    for relative, data in refused.items():
        _drop(site, relative, data)
    second = _hotfolder("once", "-c", config)
    assert second.returncode == 1, second.stdout[-3000:] + second.stderr[-3000:]
    for relative, data in refused.items():
        assert (site.failed / relative).read_bytes() == data, relative
        assert (site.failed / (relative + ".error.json")).is_file(), relative

    status_text = _hotfolder("status", "-c", config)
    status_json = _hotfolder("status", "--json", "-c", config)
    assert status_text.returncode == 0 and status_json.returncode == 0
    assert len(json.loads(status_json.stdout)["failures"]) == len(refused)

    # Searched byte for byte: a copy of the journal, so no connection of ours alters what the daemon left.
    journal_copy = tmp_path / "journal-copy"
    journal_copy.mkdir()
    for path in site.journal_path.parent.glob(site.journal_path.name + "*"):
        shutil.copy2(path, journal_copy / path.name)
    outputs: dict[str, str] = {
        "log of run 1": first.stdout + first.stderr,
        "log of run 2": second.stdout + second.stderr,
        "status": status_text.stdout + status_text.stderr,
        "status --json": status_json.stdout + status_json.stderr,
    }
    for path in sorted(journal_copy.iterdir()):
        outputs[f"journal file {path.name}"] = path.read_bytes().decode("latin-1")
    notes = [p for root in (site.done, site.failed) for p in root.rglob("*.json")]
    assert any(p.name.endswith(".duplicate.json") for p in notes) and any(p.name.endswith(".error.json")
                                                                          for p in notes)
    for path in notes:
        outputs[f"{path.relative_to(site.root)}"] = path.read_text()

    needles = _needles(sandbox)
    assert any(label.startswith("Visibuild access token") for label in needles)
    assert sum(label.startswith("SigV4") for label in needles) >= 8  # URLs, re-presigned URLs, POST policies
    leaks = {where: found for where, text in outputs.items() if (found := _leaks(text, needles))}
    assert leaks == {}, f"secrets found: {leaks}"
    # The refusals' reasons are still there for a person to read, with the secret cut out.
    sidecar = json.loads((site.failed / "espocrm-notes/note-1/refused.txt.error.json").read_text())
    assert "may not edit note-1" in sidecar["reason"]


# -- TLS ---------------------------------------------------------------------------------------------------


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def https_url(tmp_path: Path) -> Iterator[str]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate (no CA trusts it)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = HTTPServer(("127.0.0.1", 0), _Hello)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _tls_config(root: Path, url: str) -> Path:
    config = {
        "inbox": str(root / "inbox"), "done": str(root / "done"), "failed": str(root / "failed"),
        "journal": str(root / "journal.db"), "log_level": "info",
        "watch": {"settle": "100ms", "poll_interval": "100ms"},
        "targets": {
            "checked": {"vendor": "fulcrum", "url": url, "token": "${FULCRUM_TOKEN}", "field": "f1"},
            "unchecked": {"vendor": "fulcrum", "url": url, "token": "${FULCRUM_TOKEN}", "field": "f1",
                          "verify_tls": False},
        },
    }
    path = root / "tls.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_tls_is_verified_unless_a_target_turns_it_off(https_url: str, tmp_path: Path) -> None:
    settings = load_settings(_tls_config(tmp_path, https_url), environ=SECRETS)
    checked, unchecked = settings.targets["checked"], settings.targets["unchecked"]
    assert checked.verify_tls is True and unchecked.verify_tls is False

    with make_client(checked, 1) as client, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client.get("/")
    with make_client(unchecked, 1) as client:
        assert client.get("/").text == "ok"


def test_turning_tls_off_logs_a_warning_naming_the_target(https_url: str, tmp_path: Path) -> None:
    result = _hotfolder("once", "-c", str(_tls_config(tmp_path, https_url)), timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    warnings = [e for e in events if e.get("level") == "warning" and "TLS" in e.get("event", "")]
    assert [e.get("target") for e in warnings] == ["unchecked"], warnings
