"""The dashboard server's thread and loop: a stop always ends them."""

from __future__ import annotations

import asyncio
import threading


def test_a_stop_right_after_start_ends_the_thread(make_dash, monkeypatch):
    # The window between the server answering `start()` and its loop running
    # forever: a stop there (a SIGTERM just after start) used to find the loop
    # not running, schedule nothing, and leave the thread serving for good.
    gate = threading.Event()
    real_new_loop = asyncio.new_event_loop
    probe = real_new_loop()
    loop_type = type(probe)
    probe.close()

    class LateLoop(loop_type):  # type: ignore[misc, valid-type]  # whichever loop class asyncio makes here
        """Its serve-forever phase starts only when the gate opens (start-up and clean-up are not held)."""

        completing = False

        def run_until_complete(self, future):
            self.completing = True
            try:
                return super().run_until_complete(future)
            finally:
                self.completing = False

        def run_forever(self) -> None:
            if not self.completing:
                assert gate.wait(30), "the test never opened the gate"
            super().run_forever()

    monkeypatch.setattr(asyncio, "new_event_loop", LateLoop)
    dash = make_dash()
    monkeypatch.setattr(asyncio, "new_event_loop", real_new_loop)
    server = dash.server
    thread = server._thread
    assert thread.is_alive() and not server._loop.is_running()  # inside the window

    class Joiner:
        """The server's thread, let on into its loop only once stop() has made its move."""

        def join(self, timeout: float | None = None) -> None:
            gate.set()
            thread.join(timeout)

        def is_alive(self) -> bool:
            return thread.is_alive()

    server._thread = Joiner()
    assert server.stop(timeout=20) is True
    assert not thread.is_alive()
