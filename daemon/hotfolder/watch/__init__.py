"""Finding finished files in the inbox. One concern a module; imports stay light (none here).

* ``watcher``: the I/O edge: watchdog wiring or the poller, rescans, the settle thread.
* ``tracker``: every rule of "when is a file ready", as an object that does no I/O.
* ``examine``: runs the readiness tests the tracker asks for (``writers``: a lease says whether
  anybody still writes a file; ``formats``: whether its end looks like its format's end).
* ``poller``: what changed on a network mount, by folder timestamps.
* ``mounts``: the mount table, network file systems, their attribute caches.
* ``ignore``: the names never picked up.
* ``status``: the files not ready yet, written down for ``hotfolder status``.
"""
