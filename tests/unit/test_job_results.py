"""A result that comes in after the job has all of them (a straggler copy that lost, while the
output is written) is dropped quietly: no traceback in the link's thread, no file left."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from ffdt.client.job import Job


def test_a_result_after_the_checks_closed_is_dropped(tmp_path):
    job = Job.__new__(Job)                        # hand_in needs none of a job's state
    checks = ThreadPoolExecutor(max_workers=1)
    checks.shutdown()
    late = tmp_path / "chunk_00003.w.recv.mkv"
    late.write_bytes(b"a late copy")
    job.hand_in(checks, SimpleNamespace(offer=SimpleNamespace(name="w")), SimpleNamespace(name="chunk_00003"),
                late, "sha", 1.0)
    assert not late.exists()
