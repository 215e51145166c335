"""Reports a boss's or a worker's events to the tracker from a background thread.

The job never waits on the tracker: events queue up while it is away and are sent, in order,
once it is back (the client reconnects and logs in again by itself).
"""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import Any

from ffdt.client.tracker_client import TrackerClient
from ffdt.common.audit_events import PEER_EVENTS, Event
from ffdt.common.config import HEARTBEAT_INTERVAL, REPORT_BACKOFF_CAP, REPORT_BACKOFF_FIRST
from ffdt.common.errors import AuthError, RequestRejected, TranscoderError
from ffdt.common.net import Backoff
from ffdt.common.protocol import Msg

log = logging.getLogger("boss")

KEEPALIVE = 2 * HEARTBEAT_INTERVAL     # ping the tracker after this long without an event


class EventReporter(threading.Thread):
    def __init__(self, tracker: TrackerClient, *, keepalive: bool = True) -> None:
        super().__init__(name="reporter", daemon=True)
        self.tracker = tracker
        self._keepalive = KEEPALIVE if keepalive else None
        self._queue: queue.Queue[tuple[str, str, dict[str, Any]] | None] = queue.Queue()
        self._halt = threading.Event()
        self.start()

    def report(self, job: str, event: Event, **fields: Any) -> None:
        if event not in PEER_EVENTS:          # a programming error: the tracker would refuse it
            raise ValueError(f"{event!r} is not an event peers report")
        self._queue.put((job, Event(event).value, fields))

    def run(self) -> None:
        backoff = Backoff(REPORT_BACKOFF_FIRST, REPORT_BACKOFF_CAP)
        warned = False
        while True:
            try:
                item = self._queue.get(timeout=self._keepalive)
            except queue.Empty:                     # keep the tracker connection from timing out
                with contextlib.suppress(TranscoderError):
                    self.tracker.call(Msg.PING, Msg.PONG)
                continue
            if item is None:
                return
            job, event, fields = item
            while True:
                try:
                    self.tracker.event(job, event, **fields)
                    if warned:
                        log.info("tracker is back; audit events delivered")
                    warned = False
                    backoff.reset()
                    break
                except RequestRejected as exc:       # the tracker refuses this one: don't retry it
                    log.debug("tracker refused event %s: %s", event, exc)
                    break
                except (AuthError, TranscoderError) as exc:
                    if not warned:
                        log.warning("tracker unreachable (%s); the job goes on, events will be sent later", exc)
                        warned = True
                    if self._halt.wait(backoff.next()):
                        return

    def flush_and_stop(self, timeout: float) -> bool:
        """Send what is queued within `timeout` seconds; True if everything went out."""
        self._queue.put(None)
        self.join(timeout)
        if self.is_alive():
            self._halt.set()
            return False
        return True
