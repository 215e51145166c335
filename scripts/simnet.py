"""Simulated machines for scripts/bench: network namespaces joined to the host by shaped veth pairs,
cgroup v1 CPU shares, and a teardown that undoes all of it (see /work/shared/SIMULATING.md).

Everything made here is named PREFIX-... (namespaces PREFIX-wK, host-side links PREFIX-vK, cgroups
PREFIX/NAME) so that leftovers of a killed run can be found and removed (`cleanup`). Standard library only.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import selectors
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

CGROUP_ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000
# tbf's bucket: 64 KB holds one GSO super-packet of a veth (up to 64 KB), so nothing is dropped for
# being bigger than the bucket, and measured here it still gives 95.7 Mbit/s at 100mbit and
# 954 Mbit/s at 1gbit. 50 ms of queue is what a home router or switch buffers, roughly.
TBF_BURST = "64kb"
TBF_LATENCY = "50ms"
RATE = re.compile(r"^\d+(\.\d+)?([kmgt]?bit|[kmgt]?bps)$", re.IGNORECASE)


class SimNetError(Exception):
    """A command that builds or removes a simulated machine failed."""


def sh(cmd: list[str], *, check: bool = True, timeout: float = 30) -> str:
    """Run a short system command (ip, tc); return stdout, or raise SimNetError with its error line."""
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SimNetError(f"{' '.join(cmd)}: {exc}") from None
    if check and p.returncode != 0:
        raise SimNetError(f"{' '.join(cmd)}: {p.stderr.strip() or f'exit {p.returncode}'}")
    return p.stdout


def check_rate(rate: str) -> str:
    """A tc rate such as 100mbit or 1gbit; raise ValueError otherwise."""
    if not RATE.match(rate):
        raise ValueError(f"{rate!r} is not a tc rate such as 100mbit or 1gbit")
    return rate


class Teardown:
    """Undo actions, run last-made-first: processes stop before their cgroups go, links before
    namespaces. Every action runs even if an earlier one failed; failures are collected, not raised,
    so one stuck process cannot leave the network behind."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, undo: Callable[[], None]) -> None:
        self._undo.append((what, undo))

    def close(self) -> list[str]:
        """Run every undo action; return the ones that failed, as messages."""
        # a second Ctrl-C (or the SIGTERM of an impatient supervisor) must not cut teardown short
        saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        failed: list[str] = []
        try:
            while self._undo:
                what, undo = self._undo.pop()
                try:
                    undo()
                except (SimNetError, OSError, subprocess.SubprocessError) as exc:
                    failed.append(f"{what}: {exc}")
        finally:
            for s, handler in saved.items():
                signal.signal(s, handler)
        return failed

    def __enter__(self) -> Teardown:
        return self

    def __exit__(self, *exc: object) -> None:
        for message in self.close():
            print(f"bench: teardown: {message}", flush=True)


# ---------------------------------------------------------------- processes

def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM (workers and the tracker leave cleanly on it), then SIGKILL; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _drain(stream: IO[str], log: IO[str]) -> None:
    """Copy what a process prints after its readiness line to its log, so its pipe never fills."""
    for line in stream:
        log.write(line)
        log.flush()


def spawn_ready(cmd: list[str], *, env: dict[str, str], log_path: Path, ready: re.Pattern[str],
                timeout: float, what: str, teardown: Teardown) -> tuple[subprocess.Popen, re.Match[str]]:
    """Start a long-lived program and wait for its readiness line (e.g. "listening on HOST:PORT").

    It runs in a session of its own, so a Ctrl-C in the terminal reaches only the bench, which then
    stops it in order. Raises SimNetError with the last line of its log if it exits or stays silent."""
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True,
                            env=env, start_new_session=True)

    def stop() -> None:
        stop_process(proc)
        log.close()

    teardown.push(f"stop {what}", stop)

    def failure(why: str) -> SimNetError:
        lines = [l.strip() for l in log_path.read_text(errors="replace").splitlines() if l.strip()]
        return SimNetError(f"{what} {why}: {lines[-1] if lines else '(no message)'} (log: {log_path})")

    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise failure(f"not ready after {timeout:.0f}s")
            line = proc.stdout.readline()
            if not line:
                proc.wait(5)
                raise failure(f"exited ({proc.returncode})")
            log.write(line)
            match = ready.search(line)
            if match:
                break
    threading.Thread(target=_drain, args=(proc.stdout, log), name=f"drain-{what}", daemon=True).start()
    return proc, match


# ---------------------------------------------------------------- cgroups

def cgroup_hierarchies() -> list[Path]:
    """The cgroup v1 cpu and cpuacct mounts. Here they are mounted apart (not as cpu,cpuacct), so a
    process joins two groups: one limits it, the other counts its CPU time."""
    found: list[Path] = []
    for name in ("cpu", "cpuacct"):
        path = CGROUP_ROOT / name
        if not (path / "cgroup.procs").exists():
            raise SimNetError(f"{path}: no cgroup v1 {name} hierarchy mounted")
        if path.resolve() not in [p.resolve() for p in found]:
            found.append(path)
    return found


class CGroup:
    """PREFIX/NAME in the cpu and cpuacct hierarchies, with an optional CPU quota."""

    def __init__(self, prefix: str, name: str, share: float | None, teardown: Teardown) -> None:
        self.name = f"{prefix}/{name}"
        self.dirs = [h / prefix / name for h in cgroup_hierarchies()]
        for d in self.dirs:
            if not d.parent.is_dir():
                d.parent.mkdir()
                teardown.push(f"rmdir {d.parent}", lambda p=d.parent: _rmdir_cgroup(p))
            d.mkdir()
            teardown.push(f"remove cgroup {d}", lambda p=d: _rmdir_cgroup(p))
        if share is not None:
            (self.dirs[0] / "cpu.cfs_period_us").write_text(f"{CFS_PERIOD_US}\n")
            (self.dirs[0] / "cpu.cfs_quota_us").write_text(f"{round(share * CFS_PERIOD_US)}\n")

    def wrap(self, cmd: list[str]) -> list[str]:
        """cmd, started inside the group: sh joins the group, then execs cmd, which keeps its pid, so
        the group holds the program and everything it starts from its very first instruction (no
        window in which a child could be forked outside, and no preexec_fn in a threaded parent)."""
        procs = [str(d / "cgroup.procs") for d in self.dirs]
        script = "".join(f'echo $$ > "${i + 1}" && ' for i in range(len(procs))) + f'shift {len(procs)} && exec "$@"'
        return ["sh", "-c", script, "sh", *procs, *cmd]

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) used by everything that has run in the group so far."""
        acct = next((d for d in self.dirs if (d / "cpuacct.usage").exists()), None)
        if acct is None:
            raise SimNetError(f"{self.name}: no cpuacct.usage")
        return int((acct / "cpuacct.usage").read_text()) / 1e9


def _cgroup_pids(d: Path) -> list[int]:
    try:
        return [int(x) for x in (d / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def _rmdir_cgroup(d: Path) -> None:
    """Kill what is left in a group, move anything unkillable to the root group, then remove it."""
    if not d.is_dir():
        return
    for child in [c for c in d.iterdir() if c.is_dir()]:      # a killed run's leftovers (cleanup)
        _rmdir_cgroup(child)
    for pid in _cgroup_pids(d):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    delay, deadline = 0.01, time.monotonic() + 5
    while _cgroup_pids(d) and time.monotonic() < deadline:
        time.sleep(delay)           # retry backoff: a killed process leaves its group when it exits
        delay = min(delay * 2, 0.5)
    root = next(p for p in d.parents if p.parent == CGROUP_ROOT)     # /sys/fs/cgroup/<hierarchy>
    for pid in _cgroup_pids(d):
        try:
            (root / "cgroup.procs").write_text(f"{pid}\n")
        except OSError:
            pass
    d.rmdir()


# ---------------------------------------------------------------- network

@dataclass(frozen=True)
class Machine:
    """One simulated worker machine: namespace, veth pair and addresses (host side .1, worker .2)."""
    index: int
    netns: str
    host_if: str
    host_addr: str
    addr: str


class Farm:
    """`count` namespaces PREFIX-w1.., each joined to the host by a veth pair in SUBNET.k.0/24, shaped
    with tbf at `rate` on both ends. The tracker listens on the host side of pair 1 (SUBNET.1.1): a
    local address of the host, which the other namespaces reach through a /32 route via their own
    pair. No default route, and the host forwards nothing, so test traffic cannot leave the pairs."""

    def __init__(self, prefix: str, subnet: str, count: int, rate: str, teardown: Teardown) -> None:
        self.prefix, self.subnet, self.teardown = prefix, subnet, teardown
        self.rate = check_rate(rate)
        self.machines = [Machine(k, f"{prefix}-w{k}", f"{prefix}-v{k}", f"{subnet}.{k}.1", f"{subnet}.{k}.2")
                         for k in range(1, count + 1)]
        self.tracker_addr = self.machines[0].host_addr
        for m in self.machines:
            self._build(m)

    def _build(self, m: Machine) -> None:
        sh(["ip", "netns", "add", m.netns])
        self.teardown.push(f"ip netns del {m.netns}", lambda: _del_netns(m.netns))
        # worker side is eth0 in its namespace, like a machine's own interface
        sh(["ip", "link", "add", m.host_if, "type", "veth", "peer", "name", "eth0", "netns", m.netns])
        self.teardown.push(f"ip link del {m.host_if}", lambda: _del_link(m.host_if))
        sh(["ip", "addr", "add", f"{m.host_addr}/24", "dev", m.host_if])
        sh(["ip", "link", "set", m.host_if, "up"])
        ns = ["ip", "-n", m.netns]
        sh([*ns, "addr", "add", f"{m.addr}/24", "dev", "eth0"])
        sh([*ns, "link", "set", "eth0", "up"])
        sh([*ns, "link", "set", "lo", "up"])
        if m.host_addr != self.tracker_addr:
            sh([*ns, "route", "add", f"{self.tracker_addr}/32", "via", m.host_addr])
        self._shape(m, "add")
        self.teardown.push(f"tc qdisc del {m.host_if}", lambda: self._unshape(m))

    def _shape(self, m: Machine, verb: str) -> None:
        tbf = ["root", "tbf", "rate", self.rate, "burst", TBF_BURST, "latency", TBF_LATENCY]
        sh(["tc", "qdisc", verb, "dev", m.host_if, *tbf])                               # boss -> worker
        sh(["ip", "netns", "exec", m.netns, "tc", "qdisc", verb, "dev", "eth0", *tbf])  # worker -> boss

    def _unshape(self, m: Machine) -> None:
        # the qdiscs go with the links anyway; removed first so that a link that cannot be deleted
        # (a process still holding the namespace) is at least no longer shaped
        sh(["tc", "qdisc", "del", "dev", m.host_if, "root"], check=False)
        sh(["ip", "netns", "exec", m.netns, "tc", "qdisc", "del", "dev", "eth0", "root"], check=False)

    def set_rate(self, rate: str) -> None:
        """Reshape every pair (both ends) to `rate`."""
        self.rate = check_rate(rate)
        for m in self.machines:
            self._shape(m, "replace")

    def inside(self, k: int, cmd: list[str]) -> list[str]:
        """cmd run in machine k's namespace (1-based)."""
        return ["ip", "netns", "exec", self.machines[k - 1].netns, *cmd]

    def wire_bytes(self) -> int:
        """Bytes sent plus received so far on the host side of every pair: what crossed the links."""
        total = 0
        for m in self.machines:
            stats = Path("/sys/class/net") / m.host_if / "statistics"
            total += int((stats / "tx_bytes").read_text()) + int((stats / "rx_bytes").read_text())
        return total


def _del_netns(netns: str) -> None:
    # a namespace lives on while a process is inside it (and its veth with it): kill those first
    for pid in sh(["ip", "netns", "pids", netns], check=False).split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    if netns in _netns_names():
        sh(["ip", "netns", "del", netns])


def _del_link(name: str) -> None:
    if Path("/sys/class/net", name).exists():
        sh(["ip", "link", "del", name])       # deleting one end of a veth pair removes both


def _netns_names() -> list[str]:
    return [line.split()[0] for line in sh(["ip", "netns", "list"]).splitlines() if line.strip()]


def subnet_in_use(subnet: str) -> list[str]:
    """Host addresses and routes inside SUBNET.0.0/16 (another simulation using the same range)."""
    net = ipaddress.ip_network(f"{subnet}.0.0/16")
    found: list[str] = []
    for entry in json.loads(sh(["ip", "-j", "-4", "addr", "show"]) or "[]"):
        for a in entry.get("addr_info", []):
            if ipaddress.ip_address(a["local"]) in net:
                found.append(f"address {a['local']} on {entry['ifname']}")
    for route in json.loads(sh(["ip", "-j", "-4", "route", "show"]) or "[]"):
        dst = route.get("dst", "default")
        if dst != "default":
            try:
                if ipaddress.ip_network(dst, strict=False).overlaps(net):
                    found.append(f"route {dst} dev {route.get('dev', '?')}")
            except ValueError:
                pass
    return sorted(set(found))


def leftovers(prefix: str) -> list[str]:
    """Namespaces, links and cgroups named PREFIX-... / PREFIX that exist now."""
    left = [f"netns {n}" for n in _netns_names() if n.startswith(f"{prefix}-")]
    left += [f"link {p.name}" for p in Path("/sys/class/net").iterdir() if p.name.startswith(f"{prefix}-")]
    left += [f"cgroup {h / prefix}" for h in (CGROUP_ROOT / "cpu", CGROUP_ROOT / "cpuacct") if (h / prefix).is_dir()]
    return left


def cleanup(prefix: str) -> list[str]:
    """Remove whatever a killed run left behind (processes in its cgroups and namespaces too);
    return what could not be removed."""
    failed: list[str] = []
    for action in ([lambda h=h: _rmdir_cgroup(h / prefix) for h in (CGROUP_ROOT / "cpu", CGROUP_ROOT / "cpuacct")]
                   + [lambda n=n: _del_netns(n) for n in _netns_names() if n.startswith(f"{prefix}-")]
                   + [lambda p=p.name: _del_link(p) for p in Path("/sys/class/net").iterdir()
                      if p.name.startswith(f"{prefix}-")]):
        try:
            action()
        except (SimNetError, OSError) as exc:
            failed.append(str(exc))
    return failed + leftovers(prefix)
