"""Alerts: tell people by webhook and email when files fail, targets pause, files wait, or the daemon
restarts after an unclean stop, and when a paused target recovers.

The rooms, top to bottom:

* ``options``: the ``notify:`` keys (option tables and the frozen settings); light, since config reads it;
* ``rules``: when an alert is due, from the events and the clock; no I/O;
* ``messages``: an alert's payload, its webhook body and its email text;
* ``outbox``: the SQLite file beside the journal that keeps every alert until each channel took it;
* ``webhook``, ``email``: one channel each, sending one alert or raising ``DeliveryError``;
* ``service``: the threads: events in, rules applied, alerts written to the outbox, channels fed.

Nothing here is imported by the runner or the watcher: alerts listen to ``Daemon.events``. This file
imports nothing, so that ``hotfolder.config`` can read ``alerts.options`` without the machinery.
"""
