"""The daemon's small HTTP endpoint: the status page, /api/status, /metrics, /healthz and /readyz.

``server`` runs a WSGI app (``app``) on waitress in a thread of its own; ``guard`` holds the security
rules (the token and its cookie, the Host allow-list, Origin and CSRF checks); ``page`` writes the HTML.
"""
