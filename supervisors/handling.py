"""Which actor is handling which message, for whoever asks on this thread.

The actor base marks each handled message with `enter()` / `leave()`: one
ContextVar set and reset on a slot the actor owns, nothing else. The
application reads it when it needs it (`ops/logs/context.py` stamps log
records with the actor, the message's symbol and the handler's span).
"""

from __future__ import annotations

import contextvars
from typing import Any


class Handling:
    """One actor's slot: the message it is handling and that handler's span."""

    __slots__ = ("actor", "msg", "span")

    def __init__(self, actor: str) -> None:
        self.actor = actor
        self.msg: Any = None
        self.span: Any = None


_current: contextvars.ContextVar[Handling | None] = contextvars.ContextVar("stockade_handling", default=None)


def enter(slot: Handling, msg: Any) -> contextvars.Token[Handling | None]:
    """`slot`'s actor starts handling `msg` (its span, if any, is set on the slot)."""
    slot.msg, slot.span = msg, None
    return _current.set(slot)


def leave(token: contextvars.Token[Handling | None]) -> None:
    _current.reset(token)


def current() -> Handling | None:
    """The slot of the message being handled on this thread, if any."""
    return _current.get()
