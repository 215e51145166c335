"""common/net.py: the handshake Deadline, which one watchdog thread enforces for every socket."""
from __future__ import annotations

import socket
import threading
import time

from ffdt.common.net import Deadline


def quiet_pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.settimeout(5)
    return a, b


def test_a_deadline_not_met_shuts_the_socket_down_in_time():
    a, b = quiet_pair()
    with a, b:
        started = time.monotonic()
        Deadline(a, 0.3)
        assert a.recv(1) == b""            # shut down: the read ends instead of timing out at 5 s
        assert 0.25 <= time.monotonic() - started < 3


def test_a_met_deadline_leaves_the_socket_alone_and_others_still_fire():
    kept, kept_peer = quiet_pair()
    cut, cut_peer = quiet_pair()
    with kept, kept_peer, cut, cut_peer:
        Deadline(kept, 0.2).met()
        Deadline(cut, 0.4)                 # a later deadline queued behind a met one
        assert cut.recv(1) == b""
        kept_peer.sendall(b"x")
        assert kept.recv(1) == b"x"


def test_many_deadlines_share_one_thread():
    pairs = [quiet_pair() for _ in range(200)]
    before = threading.active_count()
    deadlines = [Deadline(a, 30) for a, _ in pairs]
    assert threading.active_count() <= before + 1
    for d in deadlines:
        d.met()
    for a, b in pairs:
        a.close()
        b.close()
