"""threads: 0 never oversubscribes: it takes the cores other processes leave free."""

import subprocess
import sys
import threading
import time

import pytest

from deepobfuscator import threads


def test_an_explicit_count_is_used_as_given_and_a_negative_one_refused():
    assert threads.resolve_threads(3) == 3
    with pytest.raises(ValueError, match="0 \\(auto\\) or a positive count"):
        threads.resolve_threads(-1)


def test_auto_leaves_out_the_cores_a_competing_process_is_busy_on():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it get going
        assert threads.busy_elsewhere() >= 0.7
        assert threads.auto_threads() <= max(1, threads.usable_cores() - 1)
    finally:
        spinner.kill()
        spinner.wait()


def test_this_processs_own_work_is_not_counted_as_competition():
    before = threads.busy_elsewhere()
    stop = time.time() + 0.6
    worker = threading.Thread(target=lambda: [None for _ in iter(lambda: time.time() < stop,
                                                                   False)])
    worker.start()
    try:
        during = threads.busy_elsewhere()
    finally:
        worker.join()
    assert during < before + 0.5


def test_a_local_torchrun_shares_the_free_cores(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda seconds=0.3: 2.2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads.resolve_threads(0) == 3  # (8 - 2) free cores over 2 processes
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert threads.resolve_threads(0) == 1  # never 0


def test_the_audit_and_demo_expose_threads():
    from deepobfuscator.cli import build_parser

    p = build_parser()
    for argv in (["audit", "RUN"], ["demo"], ["sweep", "--grid", "seed=0,1"]):
        assert p.parse_args([*argv, "--threads", "1"]).threads == 1
        assert p.parse_args(argv).threads == 0
