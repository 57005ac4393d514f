"""Network faults end to end, through the mount: whatever the Hub or the CDN does, every file read
is byte-identical to its source (sha256 and byte by byte), or fails with EIO once the retry budget
is spent — never a wrong byte, never a hang (every read runs in a child process with a deadline).

Faults come from the emulator's knobs; how many were injected is judged from the emulator's own
request log (statuses, bodies cut short of their range, 200s to ranged requests)."""
import os
import time

import harness
from harness import (SCALE, assert_correct_or_eio, correct_files, finish_reader, injected, read_all,
                     start_reader)

READ_DEADLINE_S = 90 if harness.SANITIZED else 60
FAULT_MOUNT_ARGS = ["--no-disk-cache", "--block-size", "1M"]   # many requests per file


def read_under(hub, figures, knobs, kind, min_injected=1, repos=("rel/small", "rel/tiny")):
    """Sets knobs, reads every file of repos through a fresh mount, checks and counts."""
    hub.emulator.config(**knobs)
    with harness.mount(hub, FAULT_MOUNT_ARGS) as m:
        pairs = [p for repo in repos for p in hub.pairs(m, repo)]
        result = read_all(pairs, READ_DEADLINE_S, figures)
    log = hub.emulator.log()
    count = injected(log, kind)
    figures.count(kind, count)
    assert_correct_or_eio(result)
    assert correct_files(result), f"no file survived the faults: {result}"
    assert count >= min_injected, f"only {count} {kind} faults were injected: the test proved nothing"
    return result, log


def test_random_5xx(hub, figures):
    read_under(hub, figures, {"error_rate": 0.25, "error_scope": "all", "seed": 1}, "5xx", 5)


def test_connection_reset_mid_body(hub, figures):
    read_under(hub, figures, {"reset_rate": 0.3, "seed": 2}, "cut", 5)


def test_truncated_bodies(hub, figures):
    read_under(hub, figures, {"truncate": 0.3, "seed": 3}, "cut", 5)


def test_whole_file_in_answer_to_a_range(hub, figures):
    """A 200 to a ranged request: its bytes start at 0, never to be served as if at the offset."""
    read_under(hub, figures, {"ignore_range": True}, "range_ignored", 3, repos=("rel/tiny",))
    read_under(hub, figures, {"fail_next": [{"origin": "cdn", "action": "ignore_range", "count": 6}]},
               "range_ignored", 3, repos=("rel/small",))


def test_429_with_retry_after_and_ratelimit_is_waited_for(hub, figures):
    rules = [{"scope": "api", "status": 429, "retry_after": 1, "ratelimit": True, "count": 1},
             {"scope": "resolve", "status": 429, "retry_after": 1, "ratelimit": True, "count": 2},
             {"scope": "cdn", "status": 429, "retry_after": 1, "count": 3}]
    result, log = read_under(hub, figures, {"fail_next": rules}, "429", 6, repos=("rel/tiny",))
    assert not result["errors"], result
    # Each 429'd request was sent again only after the second the server asked for.
    for i, e in enumerate(log):
        if e["status"] != 429:
            continue
        again = [later for later in log[i + 1:] if later["path"] == e["path"]
                 and later["method"] == e["method"] and later["range"] == e["range"]]
        assert again, f"the 429'd {e['path']} was never retried"
        waited = again[0]["time"] - (e["time"] + e["duration_ms"] / 1000.0)
        assert waited >= 0.9, f"retried {e['path']} after {waited:.2f} s, the server said 1 s"


def test_stall_longer_than_the_timeout_is_abandoned_and_retried(hub, figures):
    rules = [{"origin": "cdn", "action": "stall", "stall_ms": 20000, "after_bytes": 4096, "count": 2}]
    hub.emulator.config(fail_next=rules)
    with harness.mount(hub, FAULT_MOUNT_ARGS) as m:
        started = time.monotonic()
        result = read_all(hub.pairs(m, "rel/small"), READ_DEADLINE_S, figures)
        took = time.monotonic() - started
    left = hub.emulator.config()["fail_next"]
    stalls = 2 - (left[0]["count"] if left else 0)
    figures.count("stall", stalls)
    assert stalls == 2
    assert_correct_or_eio(result, allow_eio=False)
    # A 20 s stall was cut after the 2 s stall timeout: the two cost far less than one.
    assert took < 20, f"reading through 2 stalls took {took:.1f} s: stalls were waited out"


def test_endless_stall_is_eio_within_the_retry_budget_and_not_cached(hub, figures):
    hub.emulator.config(stall_ms=600000)
    retries = 2      # a shorter budget than the other tests: 3 attempts x 2 s stall timeout
    budget_s = (retries + 1) * (harness.STALL_TIMEOUT_S + 8 * harness.BACKOFF_MS / 1000.0)
    with harness.mount(hub, FAULT_MOUNT_ARGS, env={"HUBFS_MAX_RETRIES": str(retries)}) as m:
        pairs = hub.pairs(m, "rel/small", only="00001")
        started = time.monotonic()
        result = read_all(pairs, budget_s + 30, figures)
        took = time.monotonic() - started
        figures.count("stall", retries + 1)
        assert [f["error"] for f in result["files"]] == ["EIO"], result
        assert result["wrong"] == 0
        assert took < budget_s + 10, f"EIO came after {took:.1f} s (budget {budget_s:.1f} s)"
        # One budget per read: the kernel asks the failed read's first page again at once, and
        # that is answered with the same EIO, not with three more tries.
        # Each retry asks only for what had not come before the stall: the same last byte.
        log = hub.emulator.log()
        first = [e for e in log if (e["range"] or "").startswith("bytes=0-")]
        assert len(first) == 1, [(e["time"], e["range"]) for e in log]
        last_byte = first[0]["range"].split("-")[1]
        attempts = [e for e in log if (e["range"] or "").startswith("bytes=") and e["range"].split("-")[1] == last_byte]
        assert len(attempts) == retries + 1, [(e["time"], e["range"]) for e in attempts]
        assert all(int(e["range"][len("bytes="):].split("-")[0]) > 0 for e in attempts[1:]), attempts
        # The failure is not remembered as data: once the server answers, the same mount serves
        # the right bytes.
        hub.emulator.config(stall_ms=0)
        again = read_all(pairs, READ_DEADLINE_S, figures)
        assert_correct_or_eio(again, allow_eio=False)


def test_slow_trickle_is_not_a_stall(hub, figures):
    """100 KB/s per response: a response of 256 KiB or more takes longer than the stall timeout,
    yet it moves, and is not abandoned."""
    hub.emulator.config(bandwidth_bps=100 * 1024)
    with harness.mount(hub, FAULT_MOUNT_ARGS) as m:
        result = read_all(hub.pairs(m, "rel/tiny", only="00001"), READ_DEADLINE_S, figures)
    # The emulator records a response's duration once its last byte is written, which may be
    # just after the reader had it.
    deadline = time.time() + 5
    while True:
        slow = [e for e in harness.data_requests(hub.emulator.log())
                if e["bytes_sent"] >= 256 * 1024 and (e["duration_ms"] or 0) > harness.STALL_TIMEOUT_S * 1000]
        if slow or time.time() > deadline:
            break
        time.sleep(0.1)
    figures.count("trickle", len(slow))
    assert_correct_or_eio(result, allow_eio=False)
    assert slow, "no response was slower than the stall timeout: the test proved nothing"


def test_cdn_urls_expiring_mid_read_are_resolved_again(hub, figures):
    hub.emulator.config(cdn_url_ttl_s=1)
    args = ["--no-disk-cache", "--block-size", "256K", "--readahead-max", "0"]
    with harness.mount(hub, args) as m:
        pairs = hub.pairs(m, "rel/small", only="00001")
        chunks = os.path.getsize(pairs[0][1]) // (256 * 1024)
        # paced to last ~4 s whatever the size, so that URLs of 1 s expire several times
        result = read_all(pairs, READ_DEADLINE_S, figures, chunk=256 * 1024, pause_s=4.0 / chunks)
    log = hub.emulator.log()
    name = os.path.basename(pairs[0][1])
    resolves = [e for e in log if e["scope"] == "resolve" and e["path"].endswith(name)]
    figures.count("cdn_url_expired", len(resolves) - 1)
    assert_correct_or_eio(result, allow_eio=False)
    assert result["seconds"] > 2, "the read was over before any URL expired"
    assert len(resolves) >= 2, "the file was never resolved again after its URL expired"
    # Never a read on an expired URL that went unanswered: every 403 was followed by a resolve.
    assert all(e["status"] in (200, 206, 403) for e in log if e["origin"] == "cdn")


def test_branch_moved_mid_read_stays_on_the_pinned_commit(hub, figures):
    a_commit, a_source = hub.moving["a"]
    b_commit, b_source = hub.moving["b"]
    args = ["--no-disk-cache", "--block-size", "256K", "--readahead-max", "0"]
    try:
        with harness.mount(hub, args) as m:
            weights = os.path.join(m.path, "rel/moving/model.safetensors")
            reader = start_reader({"pairs": [[weights, os.path.join(a_source, "model.safetensors")]],
                                   "mode": "seq", "chunk": 64 * 1024, "pause_s": 0.05})
            time.sleep(0.8)
            hub.emulator.move_branch("rel/moving", "main", b_commit)
            figures.count("branch_moved")
            result = finish_reader(reader, READ_DEADLINE_S, figures)
            assert_correct_or_eio(result, allow_eio=False)
            assert result["seconds"] > 1.2, "the read ended before the branch moved"
            # Files opened after the move, under the same pinned directory: still commit a.
            later = read_all(hub.pairs(m, "rel/moving"), READ_DEADLINE_S, figures)
            assert_correct_or_eio(later, allow_eio=False)
            assert os.getxattr(weights, "user.hubfs.commit").decode() == a_commit
        resolves = [e["path"] for e in hub.emulator.log() if e["scope"] == "resolve"]
        assert resolves and all(f"/resolve/{a_commit}/" in p for p in resolves), resolves
    finally:
        hub.emulator.move_branch("rel/moving", "main", a_commit)


def test_emulator_killed_and_restarted_mid_read(hub, figures):
    args = ["--no-disk-cache", "--block-size", "1M", "--readahead-max", "0"]
    with harness.mount(hub, args) as m:
        pairs = hub.pairs(m, "rel/small")
        reader = start_reader({"pairs": pairs, "mode": "seq", "chunk": 1 << 20, "pause_s": 0.03})
        time.sleep(0.7 * SCALE + 0.3)
        assert reader.poll() is None, "the read ended before the emulator was killed"
        hub.emulator.proc.kill()          # no goodbye: connections die mid-body
        hub.emulator.proc.wait()
        time.sleep(0.5)
        hub.emulator.restart()
        figures.count("emulator_restart")
        result = finish_reader(reader, READ_DEADLINE_S, figures)
    # Connection refused for ~1 s is well inside the 3.1 s of backoff of the retry budget: no EIO.
    assert_correct_or_eio(result, allow_eio=False)
