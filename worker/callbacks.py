"""The two callables the shell passes around, named once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

#: Wall-clock seconds; the shell's only clock, injected so tests can steer it.
Clock = Callable[[], float]

#: Told which destinations changed (possibly none: a drive alone may have changed),
#: so that the planner wakes and the state is published.
ChangeListener = Callable[[set[int]], Awaitable[None]]
