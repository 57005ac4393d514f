#!/usr/bin/env python3
"""Sums the figures the reliability and security tests wrote into BUILD_DIR/reliability-figures/:
faults injected by kind, GiB read under faults, wrong bytes, hangs.

    python3 tests/reliability/figures.py build
"""
import collections
import glob
import json
import os
import sys


def main():
    build_dir = sys.argv[1] if len(sys.argv) > 1 else "build"
    faults = collections.Counter()
    totals = collections.Counter()
    files = sorted(glob.glob(os.path.join(build_dir, "reliability-figures", "*.json")))
    if not files:
        print(f"no figures under {build_dir}/reliability-figures: run the suite first", file=sys.stderr)
        return 1
    for path in files:
        with open(path) as f:
            fig = json.load(f)
        faults.update(fig["faults"])
        for key in ("bytes_under_faults", "wrong_bytes", "hangs", "eio_files"):
            totals[key] += fig[key]
    print("faults injected:")
    for kind, n in sorted(faults.items()):
        print(f"  {kind:24} {n}")
    print(f"  {'total':24} {sum(faults.values())}")
    print(f"GiB read under faults: {totals['bytes_under_faults'] / 2**30:.2f}")
    print(f"files that ended in a clean EIO: {totals['eio_files']}")
    print(f"wrong bytes: {totals['wrong_bytes']}")
    print(f"hangs: {totals['hangs']}")
    return 0 if totals["wrong_bytes"] == 0 and totals["hangs"] == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
