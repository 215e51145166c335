"""`tracker.py status` (ffdt-tracker status) against a real tracker, real workers and a real boss:
what an admin sees of the farm while a job runs, and after."""
from __future__ import annotations

import json

from tests.conftest import poll_for, run_cli, start_boss


def status(cluster, *extra: str, user: str = "ada"):
    return run_cli("tracker/tracker.py", "status", "--tracker", cluster.addr, "--user", user,
                   "--tracker-fingerprint", cluster.fingerprint, *extra, timeout=60)


def farm(cluster) -> dict:
    done = status(cluster, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_status_lists_workers_and_the_running_job_then_the_speed_seen(cluster, clips, tmp_path):
    cluster.add_user("ada", "admin")
    env = {"FFDT_TEST_FAULTS": "hold", "FFDT_TEST_RELEASE": str(tmp_path / "release")}
    for _ in range(2):
        cluster.start_worker(extra_env=env)
    boss = start_boss(cluster, clips["mid20.mp4"], tmp_path / "out.mp4", "--preset", "ultrafast",
                      "--chunk-seconds", "4")
    try:
        # both workers hold their first chunk: a job in progress, each worker with a place in use
        seen = poll_for(lambda: (f := farm(cluster))["jobs"] and all(w["busy"] == 1 for w in f["workers"]) and f,
                        30, "the job and two busy workers in the status")
        [job] = seen["jobs"]
        assert (job["boss"], job["input"], job["frames"], job["frames_done"], job["workers"]) == \
            ("b", "mid20.mp4", 600, 0, 2)
        assert len(seen["workers"]) == 2
        assert all("libx264" in w["encoders"] and w["ffmpeg"].startswith("ffmpeg ") and w["fps"] is None
                   for w in seen["workers"]), seen["workers"]
        text = status(cluster)
        assert text.returncode == 0, text.stderr
        assert "2 live workers, 1 running job" in text.stdout
        assert job["job"] in text.stdout and "0/600 (0%)" in text.stdout and "1/1" in text.stdout
    finally:
        (tmp_path / "release").touch()
    _, err = boss.communicate(timeout=240)
    assert boss.returncode == 0, err
    after = farm(cluster)
    assert after["jobs"] == []                          # ended jobs leave the list
    assert sum(w["chunks_done"] for w in after["workers"]) == 5
    assert all(w["fps"] and w["fps"] > 0 for w in after["workers"] if w["chunks_done"])


def test_status_needs_an_admin_and_says_so_in_one_line(cluster):
    done = status(cluster, user="b")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "may not act as admin" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
