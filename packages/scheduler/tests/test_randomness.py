"""random_bytes: buffered randomness never hands out the same bytes twice, even across a fork."""

from __future__ import annotations

import os

from taskmill.scheduler.randomness import random_bytes


def test_each_call_gets_fresh_bytes_of_the_size_asked() -> None:
    pieces = [random_bytes(16) for _ in range(1000)]  # several refills of the buffer

    assert all(len(piece) == 16 for piece in pieces)
    assert len(set(pieces)) == len(pieces)
    assert len(random_bytes(16_000)) == 16_000


def test_a_forked_child_does_not_repeat_what_its_parent_hands_out() -> None:
    random_bytes(8)  # the parent's buffer now holds bytes it has not handed out yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next bytes, then leave without running pytest's exit
        os.write(write, random_bytes(16))
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)

    assert len(child) == 16
    assert child != random_bytes(16)
