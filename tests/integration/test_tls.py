"""TLS on every port: tracker, worker message port and file port; by default with keys the
tracker and workers make themselves, pinned by their fingerprints; or verified against a CA."""
from __future__ import annotations

import contextlib
import shutil
import socket

import pytest

from tests.conftest import assert_same_media, run_cli

pytestmark = pytest.mark.integration
trustme = pytest.importorskip("trustme")


@pytest.fixture
def pki(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    return files


def test_a_job_over_tls_everywhere(tmp_path, clips, pki, users_data):
    import shutil
    from tests.conftest import Cluster
    c = Cluster(tmp_path / "tracker-data")
    shutil.copytree(users_data, c.data)
    tls_server = ("--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]))
    try:
        c.start_tracker(*tls_server)
        c.start_worker(*tls_server, "--tls-ca", str(pki["ca"]))
        c.start_worker(*tls_server, "--tls-ca", str(pki["ca"]))
        out = tmp_path / "out.mp4"
        done = c.boss(clips["small.mp4"], out, "--preset", "ultrafast", "--chunk-seconds", "2",
                      "--tls-ca", str(pki["ca"]))
        assert done.returncode == 0, done.stderr
        assert_same_media(clips["small.mp4"], out)
        assert any(e["event"] == "chunk_done" for e in c.audit())

        # a client that does not trust the certificate is refused with one clear line
        refused = c.boss(clips["small.mp4"], tmp_path / "o2.mp4", "--tls")
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert "certificate not trusted" in refused.stderr and "--tls-ca" in refused.stderr, refused.stderr
        # and a client that speaks no TLS at all gets nowhere either
        plain = c.boss(clips["small.mp4"], tmp_path / "o3.mp4", "--plain")
        assert plain.returncode == 1 and "Traceback" not in plain.stderr
        assert not (tmp_path / "o2.mp4").exists() and not (tmp_path / "o3.mp4").exists()
    finally:
        c.close()


def test_by_default_every_connection_is_tls_pinned_to_keys_nobody_had_to_manage(cluster, clips, tmp_path):
    """The tracker's key is made on its first start and printed; the worker's at its start, and
    registered; the boss pins both. Nothing crosses in the clear: a plain client gets nowhere."""
    assert cluster.fingerprint and (cluster.data / "tls-key.pem").stat().st_mode & 0o077 == 0
    proc, msg_port, file_port = cluster.start_worker()
    out = tmp_path / "out.mp4"
    done = cluster.boss(clips["small.mp4"], out, "--preset", "ultrafast")
    assert done.returncode == 0, done.stderr
    assert_same_media(clips["small.mp4"], out)
    for port in (cluster.tracker_port, msg_port, file_port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"\x00\x00\x00\x10" + b'{"type":"hello"}')
            sock.settimeout(10)
            with contextlib.suppress(ConnectionError):
                assert not sock.recv(100).startswith(b"\x00"), "a plain frame was answered in plain"


def test_a_tracker_key_is_trusted_on_first_use_and_a_changed_one_refused(cluster, clips, tmp_path, users_data):
    from tests.conftest import Cluster
    config = tmp_path / "config"
    cluster.start_worker()
    first = run_cli("client/boss.py", str(clips["small.mp4"]), "-o", str(tmp_path / "a.mp4"), "--tracker",
                    cluster.addr, "--user", "b", "--quiet", "--preset", "ultrafast",
                    extra_env={"FFDT_CONFIG_DIR": str(config)})
    assert first.returncode == 0, first.stderr
    assert "on first use" in first.stderr and cluster.fingerprint in first.stderr
    assert cluster.fingerprint in (config / "known_trackers").read_text()
    # another tracker (another key) on the same address: refused, in one line, before any login
    port = cluster.tracker_port
    cluster.close()
    other = Cluster(tmp_path / "other-data", tracker_port=port)
    shutil.copytree(users_data, other.data)
    try:
        other.start_tracker()
        again = run_cli("client/boss.py", str(clips["small.mp4"]), "-o", str(tmp_path / "b.mp4"), "--tracker",
                        other.addr, "--user", "b", "--quiet", extra_env={"FFDT_CONFIG_DIR": str(config)})
        assert again.returncode == 1 and "Traceback" not in again.stderr
        assert f"not {cluster.fingerprint} as trusted here" in again.stderr, again.stderr
        assert not any(e["event"] in ("auth_ok", "auth_failed") for e in other.audit())
    finally:
        other.close()


def test_a_wrong_tracker_fingerprint_is_refused_in_one_line(cluster, clips, tmp_path):
    wrong = "sha256:" + "0" * 64
    done = cluster.boss(clips["small.mp4"], tmp_path / "o.mp4", "--tracker-fingerprint", wrong)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if "error:" in line][0].count("not " + wrong) == 1
    bad = cluster.boss(clips["small.mp4"], tmp_path / "o.mp4", "--tracker-fingerprint", "abc")
    assert bad.returncode == 1 and "expected sha256:" in bad.stderr, bad.stderr
