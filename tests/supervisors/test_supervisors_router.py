"""Router: delivery, hold buffer while between instances, overflow, retire, fencing, drain."""

import queue
import threading

import pykka
import pytest
from waiting import wait_for

from stockade.codecs.messages import Envelope, Tick
from stockade.supervisors.router import Fenced, NotRunning, Router


class Sink(pykka.ThreadingActor):
    """Bare actor recording the Tick.what of each envelope; blocks on "block" until `gate`."""

    use_daemon_thread = True

    def __init__(self, out: "queue.Queue[str]", gate: threading.Event | None = None) -> None:
        super().__init__()
        self.out = out
        self.gate = gate

    def on_receive(self, message):
        body = message.envelope.body if hasattr(message, "envelope") else message.body
        self.out.put(body.what)
        if body.what == "block" and self.gate is not None:
            self.gate.wait(10.0)
        return body.what.upper()


@pytest.fixture
def refs():
    started = []

    def start(*args, **kwargs):
        ref = Sink.start(*args, **kwargs)
        started.append(ref)
        return ref

    yield start
    for ref in started:
        try:
            ref.stop(timeout=5.0)
        except pykka.Timeout:
            pass


def drain(out, n, timeout=5.0):
    return [out.get(timeout=timeout) for _ in range(n)]


def test_unknown_name_is_a_dead_letter():
    router = Router()
    assert router.tell("nobody", Tick("x"), "test") is False
    assert router.dead_letters == 1
    assert router.dead_letter_counts() == {"unknown": 1}


def test_delivers_wrapped_in_an_envelope(refs):
    router = Router()
    out = queue.Queue()
    gen = router.next_generation("a")
    assert router.register("a", refs(out), gen)
    assert router.tell("a", Tick("hello"), "test")
    assert drain(out, 1) == ["hello"]
    assert router.lookup("a") is not None
    assert router.generation("a") == 1


def test_holds_messages_between_instances_and_flushes_in_order(refs):
    router = Router()
    gen = router.next_generation("a")  # reserved, not registered yet: down
    for what in ("m1", "m2", "m3"):
        assert router.tell("a", Tick(what), "test")
    assert router.status("a").buffered == 3
    out = queue.Queue()
    router.register("a", refs(out), gen)
    assert drain(out, 3) == ["m1", "m2", "m3"]
    assert router.status("a").buffered == 0


def test_messages_to_a_dead_instance_are_held_for_the_next(refs):
    router = Router()
    out1 = queue.Queue()
    ref1 = refs(out1)
    router.register("a", ref1, router.next_generation("a"))
    ref1.stop(timeout=5.0)
    assert router.tell("a", Tick("while-dead"), "test")
    out2 = queue.Queue()
    router.register("a", refs(out2), router.next_generation("a"), restart=True)
    assert drain(out2, 1) == ["while-dead"]
    assert router.status("a").restarts == 1


def test_overflow_drops_the_oldest_and_counts():
    router = Router(buffer_size=3)
    router.next_generation("a")
    for i in range(5):
        router.tell("a", Tick(f"m{i}"), "test")
    status = router.status("a")
    assert status.buffered == 3
    assert router.dead_letter_counts() == {"overflow": 2}


def test_retired_name_drops_and_counts(refs):
    router = Router()
    router.next_generation("a")
    router.tell("a", Tick("held"), "test")
    router.retire("a")
    assert router.dead_letter_counts() == {"retired": 1}
    assert router.tell("a", Tick("late"), "test") is False
    assert router.dead_letters == 2


def test_sends_from_a_replaced_generation_are_refused_and_counted(refs):
    router = Router()
    out = queue.Queue()
    router.register("sink", refs(out), router.next_generation("sink"))
    old = router.next_generation("sender")
    assert router.tell("sink", Tick("from-1"), "sender", sender_generation=old)
    new = router.next_generation("sender")
    with pytest.raises(Fenced):  # unwinds the zombie that sends
        router.tell("sink", Tick("from-old"), "sender", sender_generation=old)
    assert router.tell("sink", Tick("from-new"), "sender", sender_generation=new)
    assert drain(out, 2) == ["from-1", "from-new"]
    assert router.dead_letter_counts() == {"fenced": 1}
    assert router.refusal_counts() == {"sender": {"tell": 1}}
    assert router.status("sender").refused == 1


def test_fence_refuses_sends_before_any_replacement_and_drains_the_inbox(refs):
    router = Router()
    gate = threading.Event()
    out = queue.Queue()
    ref = refs(out, gate)
    gen = router.next_generation("a")
    router.register("a", ref, gen)
    router.tell("a", Tick("block"), "test")
    assert drain(out, 1) == ["block"]  # now stuck in its handler
    router.tell("a", Tick("q1"), "test")
    router.tell("a", Tick("q2"), "test")
    victims = router.fence("a", gen)
    assert victims == [ref]
    assert not router.is_current("a", gen)
    with pytest.raises(Fenced):
        router.tell("x", Tick("zombie"), "a", sender_generation=gen)
    assert router.status("a").buffered == 2  # queued work kept for the successor
    out2 = queue.Queue()
    router.register("a", refs(out2), router.next_generation("a"), restart=True)
    assert drain(out2, 2) == ["q1", "q2"]
    gate.set()


def test_mark_down_with_drain_answers_waiting_asks(refs):
    router = Router()
    gate = threading.Event()
    out = queue.Queue()
    ref = refs(out, gate)
    gen = router.next_generation("a")
    router.register("a", ref, gen)
    router.tell("a", Tick("block"), "test")
    drain(out, 1)
    future = ref.ask(Envelope.wrap(Tick("asked"), "test"), block=False)
    router.mark_down("a", gen, drain=True)
    with pytest.raises(pykka.ActorDeadError):
        future.get(timeout=5.0)
    gate.set()


def test_fence_covers_the_subtree(refs):
    router = Router()
    parent = refs(queue.Queue())
    child = refs(queue.Queue())
    pgen = router.next_generation("sup")
    router.register("sup", parent, pgen)
    cgen = router.next_generation("kid")
    router.register("kid", child, cgen, parent="sup")
    assert router.descendants("sup") == ["kid"]
    assert set(router.fence("sup", pgen)) == {parent, child}
    assert not router.is_current("kid", cgen)
    assert router.tell("kid", Tick("held"), "test")  # held for the next kid
    assert router.status("kid").buffered == 1


def test_a_fenced_owner_cannot_take_names(refs):
    router = Router()
    sup = router.next_generation("sup")
    router.fence("sup", sup)
    with pytest.raises(Fenced):
        router.next_generation("kid", owner=("sup", sup))


def test_stale_registration_is_refused(refs):
    router = Router()
    old = router.next_generation("a")
    router.next_generation("a")
    assert router.register("a", refs(queue.Queue()), old) is False


def test_ask_and_snapshot(refs):
    router = Router()
    out = queue.Queue()
    router.register("a", refs(out), router.next_generation("a"))
    assert router.ask("a", Tick("hi"), timeout=5.0) == "HI"
    with pytest.raises(NotRunning):
        router.ask("nobody", Tick("hi"), timeout=1.0)
    (status,) = router.snapshot()
    assert (status.name, status.state, status.alive, status.generation, status.restarts) == ("a", "up", True, 1, 0)
    assert status.mailbox == 0


def test_concurrent_tells_are_all_accounted_for(refs):
    router = Router(buffer_size=10_000)
    out = queue.Queue()
    gen = router.next_generation("a")
    n_threads, per_thread = 4, 500

    def sender(k):
        for i in range(per_thread):
            router.tell("a", Tick(f"{k}:{i}"), "test")

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    router.register("a", refs(out), gen)  # registers mid-stream
    for t in threads:
        t.join(10.0)
    got = drain(out, n_threads * per_thread)
    for k in range(n_threads):  # per-sender order preserved across the hand-over
        mine = [int(w.split(":")[1]) for w in got if w.startswith(f"{k}:")]
        assert mine == list(range(per_thread))
    wait_for(lambda: router.dead_letters == 0 and out.empty(), timeout=2.0)


def test_envelope_ids_are_unique_32_hex_digits_and_differ_between_processes():
    import subprocess
    import sys

    ids = [Envelope.wrap(Tick("x"), "me").id for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids)
    code = "from stockade.codecs.messages import Envelope, Tick; print(Envelope.wrap(Tick('x'), 'me').id)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert other.stdout.strip() not in ids
