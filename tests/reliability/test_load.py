"""64 concurrent readers for a bounded time over several models, each thread picking a file and a
way of reading it (whole file sequentially, random preads, random slices of an mmap), under light
network faults, the kernel's page cache dropped after each so that reads reach the daemon:
every byte is compared with the source, no read may fail, nobody may hang, and
the daemon's resident memory stays within its memory budget plus a fixed overhead.

The overhead (OVERHEAD_BYTES), measured against an idle mount's RSS:
- every in-flight FUSE read holds a reply buffer of up to 1 MiB (the kernel's largest read):
  64 readers → 64 MiB;
- each of up to 16 connections has a 512 KiB curl receive buffer → 8 MiB;
- allocator slack (per-thread malloc arenas of the FUSE and fetch threads) → 32 MiB.
The same test runs under ThreadSanitizer in a separate build (see the suite's README) and under
ASan/UBSan in CI, shorter there (HUBFS_SANITIZED=1), where RSS is judged with the sanitizer's
own shadow memory and quarantine added. HUBFS_LOAD_SECONDS overrides the duration.
"""
import os
import threading

import harness
from harness import finish_reader, start_reader

MIB = 1024 * 1024
READERS = 64
PROCESSES = 4
SECONDS = float(os.environ.get("HUBFS_LOAD_SECONDS") or (10 if harness.SANITIZED else 24))
MEMORY_BUDGET = 32 * MIB           # less than the ~56 MB of files read
OVERHEAD_BYTES = (64 + 8 + 32) * MIB
SANITIZER_OVERHEAD = 256 * MIB   # ASan quarantine (capped below) and shadow memory


def test_64_concurrent_readers_all_bytes_correct_within_memory_budget(hub, figures):
    hub.emulator.config(error_rate=0.01, reset_rate=0.01, error_scope="data", seed=9)
    env = {"ASAN_OPTIONS": "quarantine_size_mb=64:detect_leaks=1"} if harness.SANITIZED else {}
    args = ["--no-disk-cache", "--memory-budget", "32M"]
    with harness.mount(hub, args, env=env) as m:
        pairs = hub.pairs(m, "rel/small") + hub.pairs(m, "rel/tiny") + hub.pairs(m, "rel/moving")
        for mounted, _ in pairs:     # the listing happens once, before the clock starts
            os.stat(mounted)
        idle_rss = m.rss()
        peak = [idle_rss]
        sampling = threading.Event()

        def sample():
            while not sampling.wait(0.1):
                peak[0] = max(peak[0], m.rss())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        readers = [start_reader({"pairs": pairs, "mode": "mixed", "threads": READERS // PROCESSES,
                                 "seconds": SECONDS, "seed": i + 1, "chunk": 1 << 20,
                                 "drop_page_cache": True})
                   for i in range(PROCESSES)]
        try:
            results = [finish_reader(p, SECONDS + 90, figures) for p in readers]
        finally:
            sampling.set()
            sampler.join()
            for p in readers:
                if p.poll() is None:
                    p.kill()
        stats = m.stats()
        daemon_log = m.log_text()
    assert "Sanitizer" not in daemon_log and "runtime error" not in daemon_log, daemon_log[-4000:]
    log = hub.emulator.log()
    figures.count("5xx", harness.injected(log, "5xx"))
    figures.count("cut", harness.injected(log, "cut"))
    total = sum(r["bytes"] for r in results)
    reads = sum(r["reads"] for r in results)
    limit = idle_rss + MEMORY_BUDGET + OVERHEAD_BYTES + (SANITIZER_OVERHEAD if harness.SANITIZED else 0)
    print(f"load: {reads} reads, {total / MIB:.0f} MiB in {SECONDS} s, idle RSS "
          f"{idle_rss / MIB:.0f} MiB, peak RSS {peak[0] / MIB:.0f} MiB (limit {limit / MIB:.0f}), "
          f"memory_used {stats['memory_used'] / MIB:.0f} MiB, evictions {stats['evictions']}, "
          f"released {stats['released_blocks']}")
    for r in results:
        assert r["wrong"] == 0, r
        assert not r["errors"], f"reads failed under load: {r}"
    assert reads > 200 and total > 64 * MIB, "the readers did next to nothing"
    # More than the budget went through memory: blocks were evicted for room or released once
    # the kernel had them, else the test proved nothing.
    assert stats["evictions"] + stats["released_blocks"] > 0 and total > 2 * MEMORY_BUDGET, \
        "the budget was never under pressure: the test proved nothing"
    assert stats["memory_used"] <= MEMORY_BUDGET, stats
    assert peak[0] <= limit, f"peak RSS {peak[0] / MIB:.0f} MiB over the {limit / MIB:.0f} MiB limit"
