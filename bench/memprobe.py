"""``signoff serve`` with a memory probe, for bench/soak.py ``--probe``; not part of the service.

    SIGNOFF_MEMPROBE=/tmp/replica0.jsonl python bench/memprobe.py serve

Runs ``signoff serve`` unchanged, except that on SIGUSR2 the process appends one JSON line
to the file named by ``SIGNOFF_MEMPROBE``, and on SIGUSR1 it does the same, then gives the
heap's free memory back to the system (glibc ``malloc_trim(0)``) and appends a second line.
On SIGWINCH it appends a light line (``note`` ``gc``) with only the garbage collector's
pauses: no collection, no count of objects, so it hardly stops the server. A line holds:

- ``rss_mb``: the resident set, as the kernel counts it;
- ``blocks``: memory blocks Python's allocator has handed out and not got back
  (``sys.getallocatedblocks()``, after a full collection): Python objects accumulating
  show here;
- ``heap_used_mb`` / ``heap_free_mb`` / ``mmap_mb``: glibc's ``mallinfo2``, over every
  arena: bytes in use, bytes free but kept in the heap (fragmentation), bytes in
  separate mappings;
- ``pyarenas_mb`` / ``pyblocks_mb``: Python's small-object allocator (objects of 512
  bytes or less), from ``sys._debugmallocstats()``: the arenas it holds from the system,
  and the bytes of them in use;
- ``objects``: the count of live objects of the 25 most numerous types;
- with tracemalloc on (``PYTHONTRACEMALLOC=<frames>``, or ``SIGNOFF_MEMPROBE_TRACE=<frames>``
  to start it at the first SIGUSR2 reading, so that the last snapshot holds what was
  allocated since and is still alive): ``traced_mb``, and the first and the latest
  snapshot written beside the file (``.first.snap``, ``.last.snap``);
- ``gc2_pauses_ms``: how long each full (generation 2) collection since the previous line
  held the process, and ``gc01_count`` / ``gc01_ms``: the younger collections, how many
  and how long in all (the probe's own collection is not counted).
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import gc
import json
import os
import re
import runpy
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

STARTED = time.monotonic()
MB = 2**20


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        return libc
    except (OSError, AttributeError):  # not glibc, or older than 2.33
        return None


LIBC = _libc()


class GcPauses:
    """How long the cyclic garbage collector held the process, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.probing = False  # the probe's own collection is not the service's
        self.full: list[float] = []
        self.young = [0, 0.0]

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        if self.started is None or self.probing:
            return
        took, self.started = time.perf_counter() - self.started, None
        if info["generation"] == 2:
            self.full.append(round(took * 1000, 1))
        else:
            self.young[0] += 1
            self.young[1] += took

    def take(self) -> dict[str, Any]:
        """What happened since the last ``take``."""
        out = {"gc2_pauses_ms": self.full, "gc01_count": self.young[0],
               "gc01_ms": round(self.young[1] * 1000, 1)}
        self.full, self.young = [], [0, 0.0]
        return out


GC = GcPauses()


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def obmalloc() -> dict[str, float]:
    """Python's small-object allocator, from the report it prints on the C stderr."""
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    found = {}
    for key, pattern in (("pyarenas_mb", r"arenas \* \d+ bytes/arena\s+=\s+([\d,]+)"),
                         ("pyblocks_mb", r"# bytes in allocated blocks\s+=\s+([\d,]+)")):
        match = re.search(pattern, text)
        if match:
            found[key] = round(int(match.group(1).replace(",", "")) / MB, 2)
    return found


def reading(out: Path, note: str) -> dict[str, Any]:
    pauses = GC.take()
    GC.probing = True
    try:
        gc.collect()
    finally:
        GC.probing = False
    counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
    line: dict[str, Any] = {
        "t": round(time.monotonic() - STARTED, 1), "note": note,
        "rss_mb": round(rss_mb(), 2), "blocks": sys.getallocatedblocks(),
        "gc_objects": sum(counts.values()), "objects": dict(counts.most_common(25)),
        "frozen": gc.get_freeze_count(),
    }
    line |= obmalloc() | pauses
    if LIBC is not None:
        info = LIBC.mallinfo2()
        line |= {"heap_used_mb": round(info.uordblks / MB, 2),
                 "heap_free_mb": round(info.fordblks / MB, 2),
                 "mmap_mb": round(info.hblkhd / MB, 2)}
    if tracemalloc.is_tracing():
        line["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / MB, 2)
        snapshot = tracemalloc.take_snapshot()
        first = out.with_suffix(".first.snap")
        target = out.with_suffix(".last.snap") if first.exists() else first
        snapshot.dump(str(target.with_suffix(".tmp")))
        os.replace(target.with_suffix(".tmp"), target)  # never half a snapshot
    return line


def frozen_garbage() -> dict[str, Any]:
    """A full collection over the frozen objects too (``signoff.collector`` freezes the
    survivors of young collections): how much garbage in cycles they held, and of what."""
    frozen = gc.get_freeze_count()
    GC.probing = True
    gc.unfreeze()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
        kinds = collections.Counter(type(o).__name__ for o in gc.garbage)
        gc.garbage.clear()
    finally:
        gc.set_debug(0)
        gc.collect()  # what DEBUG_SAVEALL kept, freed now
        GC.probing = False
    return {"frozen_before": frozen, "frozen_garbage": found,
            "frozen_garbage_kinds": dict(kinds.most_common(15))}


def record(out: Path, *lines: dict[str, Any]) -> None:
    with out.open("a") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")


def main() -> None:
    out = Path(os.environ["SIGNOFF_MEMPROBE"])

    def on_usr2(_signum: int, _frame: Any) -> None:
        record(out, reading(out, "probe"))
        frames = os.environ.get("SIGNOFF_MEMPROBE_TRACE")
        if frames and not tracemalloc.is_tracing():  # from the first reading on
            tracemalloc.start(int(frames))

    def on_usr1(_signum: int, _frame: Any) -> None:
        before = reading(out, "before_trim")
        garbage = frozen_garbage()
        full = reading(out, "after_full_collection") | garbage
        if LIBC is not None:
            LIBC.malloc_trim(0)
        record(out, before, full, reading(out, "after_trim"))

    def on_winch(_signum: int, _frame: Any) -> None:
        record(out, {"t": round(time.monotonic() - STARTED, 1), "note": "gc", **GC.take()})

    gc.callbacks.append(GC)
    signal.signal(signal.SIGWINCH, on_winch)
    signal.signal(signal.SIGUSR2, on_usr2)
    signal.signal(signal.SIGUSR1, on_usr1)
    sys.argv = ["signoff", *sys.argv[1:]]
    runpy.run_module("signoff", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
