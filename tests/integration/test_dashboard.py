"""The tracker's web dashboard (serve --http) in a real headless browser (Chromium), beside a real
tracker, real workers and a running boss: the workers and the job appear, the page renders."""
from __future__ import annotations

import base64
import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from ffdt.common.tls import CERT_FILE
from tests.conftest import PASSWORD, _read_line, poll_for, run_cli, start_boss

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium here (scripts/test installs it)")


def dashboard(cluster, where: str = "127.0.0.1:0") -> str:
    """Restart the cluster's tracker with the dashboard on; its URL."""
    cluster.tracker.terminate()
    cluster.tracker.wait(30)
    cluster.start_tracker("--http", where)
    line = _read_line(cluster.tracker, 30)
    m = re.match(r"dashboard on (https?://[0-9.]+:\d+/)$", line.strip())
    assert m, line
    return m[1]


def browser(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1280,900", *args], capture_output=True, text=True, timeout=90)


def test_the_dashboard_shows_the_workers_and_a_running_job_in_a_browser(cluster, clips, tmp_path):
    url = dashboard(cluster)
    env = {"FFDT_TEST_FAULTS": "hold", "FFDT_TEST_RELEASE": str(tmp_path / "release")}
    ports = [cluster.start_worker(extra_env=env)[1] for _ in range(2)]
    boss = start_boss(cluster, clips["mid20.mp4"], tmp_path / "out.mp4", "--preset", "ultrafast",
                      "--chunk-seconds", "4")
    try:
        poll_for(lambda: list(tmp_path.glob("release.held.*")), 60, "a worker holding a chunk")
        dom = browser("--dump-dom", url).stdout
        shot = tmp_path / "dashboard.png"
        done = browser(f"--screenshot={shot}", url)
        assert shot.exists(), done.stderr[-2000:]
    finally:
        (tmp_path / "release").touch()
    _, err = boss.communicate(timeout=240)
    assert boss.returncode == 0, err
    # what the browser rendered: both workers, the job with its input and a progress bar
    workers = re.search(r'<table id="workers">(.*?)</table>', dom, re.S)
    jobs = re.search(r'<table id="jobs">(.*?)</table>', dom, re.S)
    assert workers and jobs, dom[:3000]
    for port in ports:
        assert f"w@127.0.0.1:{port}" in workers[1]
    assert "libx264" in workers[1] and "mid20.mp4" in jobs[1] and "<progress" in jobs[1] and "/600" in jobs[1]
    assert "2 live workers, 1 running job" in dom and "job_started" in dom      # the recent events too
    # and the screenshot is a rendered page, not a blank one: dark text on a light background
    stats = subprocess.run(["ffprobe", "-v", "error", "-f", "lavfi", "-i", f"movie={shot},signalstats",
                            "-show_entries", "frame_tags=lavfi.signalstats.YMIN,lavfi.signalstats.YMAX:stream=width,height",
                            "-of", "default=nw=1"], capture_output=True, text=True, timeout=60).stdout
    values = dict(line.split("=", 1) for line in stats.split())
    assert (values["width"], values["height"]) == ("1280", "900")
    assert int(values["TAG:lavfi.signalstats.YMAX"]) - int(values["TAG:lavfi.signalstats.YMIN"]) > 150, stats


def test_the_dashboard_answers_only_to_its_own_address(cluster):
    """A web page elsewhere cannot read it through a DNS name rebound to 127.0.0.1."""
    url = dashboard(cluster)
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/farm.json", headers={"Host": f"attacker.example:{port}"})
    refused = conn.getresponse()
    assert refused.status == 421 and b"workers" not in refused.read()
    conn.request("GET", "/farm.json")
    ok = conn.getresponse()
    assert ok.status == 200 and ok.getheader("Content-Security-Policy", "").startswith("default-src 'none'")
    assert b'"workers"' in ok.read()


def test_off_loopback_without_tls_is_refused_in_one_line(tmp_path):
    done = run_cli("tracker/tracker.py", "serve", "--port", "0", "--data-dir", str(tmp_path / "d"), "--plain",
                   "--http", "0.0.0.0:8080", timeout=60)
    assert done.returncode != 0 and "needs TLS" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "d").exists()


def test_off_loopback_the_dashboard_is_https_with_an_admin_login(cluster, tmp_path):
    """--http on every address: HTTPS with the tracker's own key, and an admin user's login (the
    requests here reach it over loopback: test traffic stays on this machine)."""
    cluster.add_user("ada", "admin")
    url = dashboard(cluster, "0.0.0.0:0")
    assert url.startswith("https://0.0.0.0:")
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    cluster.start_worker()
    tls = ssl.create_default_context(cafile=str(cluster.data / CERT_FILE))
    tls.check_hostname = False           # a key of the tracker's own, pinned here by its certificate

    def get(path: str, user: str | None = None, password: str = PASSWORD) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=tls)
        headers = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()} if user else {}
        conn.request("GET", path, headers=headers)
        reply = conn.getresponse()
        return reply.status, reply.read()

    status, body = get("/farm.json")
    assert status == 401 and b"workers" not in body
    assert get("/farm.json", "b")[0] == 403                       # a boss is not an admin
    status, body = get("/farm.json", "ada")
    assert status == 200 and len(json.loads(body)["workers"]) == 1
    status, body = get("/", "ada")
    assert status == 200 and b"<table id=workers>" in body
    # plain HTTP on the HTTPS port gets nothing
    plain = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        plain.request("GET", "/farm.json")
        plain.getresponse().read()
    # idle connections cannot pile up threads: past 32 at once, the next is closed at once
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(32)]
    try:
        time.sleep(0.5)
        extra = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert extra.recv(1) == b""
        extra.close()
    finally:
        for conn in idle:
            conn.close()

    def serving() -> bool:
        try:
            return get("/farm.json", "ada")[0] == 200
        except (OSError, http.client.HTTPException):     # a place still held by a closing connection
            return False
    poll_for(serving, 30, "the dashboard serving again")
    # in a real browser, with the login in the address (the certificate is the tracker's own)
    dom = browser("--ignore-certificate-errors", "--dump-dom", f"https://ada:{PASSWORD}@127.0.0.1:{port}/").stdout
    assert "1 live worker" in dom and '<table id="workers">' in dom, dom[:2000]
    # guessing is cut short: after five wrong logins (garbage counts), even the right one waits
    for garbage in ("Basic \xff\xfe", "Basic " + "A" * 5000, "Bearer x", "Basic bm91c2Vy"):   # last: no ':'
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=tls)
        conn.putrequest("GET", "/farm.json")
        conn.putheader("Authorization", garbage.encode("latin-1"))
        conn.endheaders()
        assert conn.getresponse().status == 401, garbage[:20]
    assert get("/farm.json", "ada", "wrong")[0] == 401
    assert get("/farm.json", "ada")[0] == 429
