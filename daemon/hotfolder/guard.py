"""The transport under each target's HTTP client: every request of the target, to its API and to its
S3 alike, passes the target's outage :class:`~hotfolder.limits.Circuit` on the way out and reports
on the way back whether the vendor answered. Sitting under the client, it sees all of them whichever
adapter or helper sends them, and the adapters need not know it is there.
"""

from __future__ import annotations

import httpx

from hotfolder.limits import Circuit

SERVER_ERROR = 500


class CircuitTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, circuit: Circuit) -> None:
        self._inner = inner
        self.circuit = circuit

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        probe = self.circuit.admit()  # raises TargetUnavailable while paused (the job waits)
        try:
            response = self._inner.handle_request(request)
        except httpx.TransportError as error:
            # No URL in the reason: a presigned one carries its signature in the query.
            self.circuit.failed(f"{type(error).__name__}", probe=probe)
            raise
        except BaseException:
            if probe:  # cut short on our side (the file changed under the upload): no verdict
                self.circuit.probe_lost()
            raise
        if response.status_code >= SERVER_ERROR:
            self.circuit.failed(f"HTTP {response.status_code}", probe=probe)
        else:
            self.circuit.answered()
        return response

    def close(self) -> None:
        self._inner.close()
