"""Where compiled code lets another thread have the interpreter lock.

CPython hands the GIL to a waiting thread only when the thread holding it reaches a check of the
interpreter's loop: every function entry and loop jump of interpreted code. Native code compiled
with mypyc never reaches one (mypyc/mypyc#579), so a compiled loop that decodes or maps thousands of
events keeps the lock for tens of milliseconds while the apply thread, its reply from the target
in hand, waits for it: each of a batch's statements then took 8-13 ms instead of 2-4.

Invariant: this module is never compiled (`replicator.compiled.MODULES` leaves it out, a test
checks), so `point()` is an interpreted call, about 60 ns, at which a pending switch happens.
"""

from __future__ import annotations


def point() -> None:
    """Let a thread waiting for the interpreter lock have it (called once per event in hot loops)."""
