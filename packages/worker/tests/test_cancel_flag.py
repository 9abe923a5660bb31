"""The cancellation flag handlers get: a ``threading.Event`` that builds its lock lazily."""

from __future__ import annotations

import threading

from taskmill.worker.context import CancelEvent


def test_it_is_an_event_that_starts_clear() -> None:
    flag = CancelEvent()
    assert isinstance(flag, threading.Event)
    assert not flag.is_set()
    assert not flag.wait(0.01)  # times out: nothing set it


def test_set_wakes_a_thread_already_waiting() -> None:
    flag = CancelEvent()
    waiting = threading.Event()
    woken: list[bool] = []

    def waiter() -> None:
        waiting.set()
        woken.append(flag.wait(30))

    thread = threading.Thread(target=waiter)
    thread.start()
    waiting.wait(30)
    flag.set()
    thread.join(30)
    assert woken == [True]
    assert flag.is_set()


def test_a_set_flag_answers_wait_at_once_until_cleared() -> None:
    flag = CancelEvent()
    flag.set()
    assert flag.wait(30)
    flag.clear()
    assert not flag.is_set()
    assert not flag.wait(0.01)
