"""The ``signoff`` command's first step: ``signoff serve`` starts again on the C allocator.

Python's own small-object allocator gives memory back to the system only an arena (1 MB)
at a time, and only once every object in that arena is gone. After a crowd of long-poll
waiters has been answered, the few objects made meanwhile that live on (a statement a
pooled connection prepared, a cache entry) keep hundreds of its arenas, and the server
stayed at about three times its idle resident set (``docs/performance.md``, long-poll
waiters). With ``PYTHONMALLOC=malloc`` every object comes from glibc, whose
``malloc_trim(0)`` (``signoff.collector``, after a drain) gives back free pages from
anywhere in its heap. The first crowd leaves the server at about 1.4 times the idle size
it had before any (the pages that still hold one of those objects, made once); after each
later crowd it returns to the idle level it had before that crowd.

The allocator is chosen when the interpreter starts, so ``serve`` sets the variable and
replaces its own process with a new interpreter on the same command line (``execve``: the
same process id, so a supervisor sees nothing), before anything heavy is imported: it
costs one interpreter start, a few tens of milliseconds. A ``PYTHONMALLOC`` already in the
environment is obeyed as it is (``PYTHONMALLOC=pymalloc`` keeps Python's allocator).
Every other command runs in the first process, and so does ``serve`` elsewhere than on
Linux, where there is no ``malloc_trim`` to give the memory back.
"""

from __future__ import annotations

import os
import sys

# The options of ``signoff`` itself (before the command) that take no value.
FLAGS = frozenset({"--verbose", "-v", "--help"})
ALLOCATOR = "malloc"


def command(argv: list[str]) -> str | None:
    """The command named on a ``signoff`` command line (without the program's name)."""
    args = iter(argv)
    for arg in args:
        if arg == "--":
            return next(args, None)
        if not arg.startswith("-"):
            return arg
        if "=" not in arg and arg not in FLAGS:
            next(args, None)  # the option's value
    return None


Exec = tuple[str, list[str], dict[str, str]]


def restart_on_allocator(argv: list[str], environ: dict[str, str]) -> Exec | None:
    """What to ``execve`` for this command line, or None to go on in this process."""
    if command(argv) != "serve" or "PYTHONMALLOC" in environ or sys.platform != "linux":
        return None
    if not sys.executable or len(sys.orig_argv) < 2:
        return None
    program = [sys.executable, *sys.orig_argv[1:]]
    return sys.executable, program, {**environ, "PYTHONMALLOC": ALLOCATOR}


def main() -> None:
    restart = restart_on_allocator(sys.argv[1:], dict(os.environ))
    if restart is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(*restart)
    from signoff.cli import main as cli_main

    cli_main()
