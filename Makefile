# Two entry points for a fresh machine with Python 3.11+: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

.PHONY: setup demo test lint rgw netservers systemd postgres browser
setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/hotfolder demo

# Ceph RGW is the real S3 server the presigned-URL tests run against; installing it needs root
# (apt). Without it those tests skip with a reason (CI installs it and never skips).
rgw:
	@bash .ci/install-rgw || echo "radosgw not installed: the Ceph RGW tests will be skipped"

# Samba, vsftpd and sshd (mounted with sshfs) serve the inbox in the share tests (tests/netshares.py
# starts private instances on 127.0.0.1), as on a scan server.
netservers:
	@bash .ci/install-netservers || echo "samba/vsftpd/sshd/sshfs not installed: the share tests will be skipped"

# systemd-nspawn boots a real systemd 252 in a container for the test of the shipped unit
# (tests/test_systemd.py); the unit's security exposure is printed for the CI log (the test asserts <= 1.5).
systemd:
	@bash .ci/install-systemd || echo "systemd-nspawn not installed: the real-systemd test will be skipped"
	@systemd-analyze security --offline=true systemd/hotfolder.service 2>/dev/null | tail -n 1 || true

# PostgreSQL serves the shared journal of several daemons on one share (tests/postgres.py makes a private
# cluster on 127.0.0.1 with initdb and pg_ctl, as the unprivileged user the package creates).
postgres:
	@bash .ci/install-postgres || echo "postgresql not installed: the PostgreSQL journal tests will be skipped"

# Debian's headless Chromium and chromium-driver: the status page is tested in a real browser (Selenium).
browser:
	@bash .ci/install-browser || echo "chromium/chromium-driver not installed: the status page browser tests will be skipped"

test: setup rgw netservers systemd postgres browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -n 2

lint: setup
	$(VENV)/bin/ruff check .
