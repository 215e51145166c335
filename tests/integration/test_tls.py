"""TLS on every port: tracker, worker message port and file port, verified against a test CA."""
from __future__ import annotations

import pytest

from tests.conftest import assert_same_media

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
        plain = c.boss(clips["small.mp4"], tmp_path / "o3.mp4")
        assert plain.returncode == 1 and "Traceback" not in plain.stderr
        assert not (tmp_path / "o2.mp4").exists() and not (tmp_path / "o3.mp4").exists()
    finally:
        c.close()
