"""Summarise py-spy collapsed stacks (``--format raw``): where the samples are, by function.

    python -m benchmarks.profile_summary benchmarks/results/profile/op2-1item-c512-p1-0.txt [--top 25]
    python -m benchmarks.profile_summary FILE --within ReceiverOwner.run   # only the receiver-owner thread's stacks

Self = samples whose innermost frame is the function; total = samples with the function anywhere on the stack
(counted once per sample). Percentages are of all samples (py-spy leaves out idle threads by default).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r" \(([^:]+):\d+\)$")


def _frame(raw: str) -> str:
    """'process (worker/processing/processor.py:123)' → 'process (worker/processing/processor.py)' (lines merged)."""
    return _LINE.sub(lambda m: f" ({m.group(1).split('site-packages/')[-1]})", raw.strip())


def summarise(text: str, within: str | None = None) -> tuple[int, Counter[str], Counter[str]]:
    """``within``: only the stacks with a frame whose name contains it (e.g. one thread's entry function)."""
    total = 0
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")[1:]]  # the first entry is the thread
        if not frames or (within is not None and not any(within in f for f in frames)):
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    return total, own, incl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--within", metavar="FRAME", help="only stacks with a frame containing FRAME")
    args = parser.parse_args()
    total, own, incl = 0, Counter[str](), Counter[str]()
    for path in args.files:
        t, o, i = summarise(path.read_text(), args.within)
        total, own, incl = total + t, own + o, incl + i
    print(f"{total} samples")
    for title, counter in (("self", own), ("total", incl)):
        print(f"\n-- top {args.top} by {title}")
        for name, n in counter.most_common(args.top):
            print(f"{100.0 * n / max(total, 1):6.1f}%  {name}")


if __name__ == "__main__":
    main()
