"""Stopping loads early for a terminated run (SIGTERM, the UI's terminate): ``LoadStop`` ends each load at its next
safe point, with nothing of it written, and lets loads commit only while their caller can report them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class LoadStopped(Exception):
    """A load that a ``LoadStop`` ended before it committed."""


class LoadStop:
    """Ends a caller's loads early, with nothing of them written, and never lets a load commit behind its back.

    ``request()`` stops every load at its next safe point: between two batches of its read, before it normalizes,
    or before its load starts. A load starts its load step (which commits) only once ``admit`` lets it in: one load
    each time the caller enters ``commits_allowed()``, and none once a stop was requested; an admitted load runs to
    its end. Leaving ``commits_allowed`` and ``request`` wait until the admitted load has been ``release``d: by the
    loader when its attempt failed (its rows undone), by the caller once it holds the load's result. (Loads into
    one destination take turns anyway: ``LoadDestination.session``.) A caller that waits for results inside
    ``commits_allowed`` and reports each one outside it never has a load committing, nor a second committed load
    unreported, while it reports: wherever it is interrupted, it has reported or holds every committed load."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        """Set by ``request``; the read checks it between batches."""
        self._condition = threading.Condition()
        self._open = False
        self._admitted: set[str] = set()

    @contextmanager
    def commits_allowed(self) -> Iterator[None]:
        """One load may start committing while this is entered; leaving it waits for that load's result."""
        with self._condition:
            self._open = True
            self._condition.notify_all()
        try:
            yield
        finally:
            with self._condition:
                self._open = False
                self._condition.wait_for(lambda: not self._admitted)

    def request(self) -> None:
        """Stops every load at its next safe point, and waits for the loads already committing to end."""
        with self._condition:
            self.requested.set()
            self._open = False
            self._condition.notify_all()
            self._condition.wait_for(lambda: not self._admitted)

    def admit(self, collection: str) -> None:
        """Waits until ``collection``'s load may commit; raises ``LoadStopped`` if a stop comes first."""
        with self._condition:
            self._condition.wait_for(lambda: self._open or self.requested.is_set())
            if self.requested.is_set():
                raise LoadStopped(f"{collection}: stopped before its load started")
            self._admitted.add(collection)
            self._open = False  # one load per turn of the caller

    def admit_chunk(self, collection: str) -> None:
        """Lets a chunk that does not end its collection's read commit now, unless a stop came first (raises
        ``LoadStopped``). Its commit is no result to report, so it does not wait for the caller's turn; ``request``
        and leaving ``commits_allowed`` wait for it as for any admitted load, until the loader ``release``s it."""
        with self._condition:
            if self.requested.is_set():
                raise LoadStopped(f"{collection}: stopped between two chunks")
            self._admitted.add(collection)

    def committing(self, collection: str) -> bool:
        with self._condition:
            return collection in self._admitted

    def release(self, collection: str) -> None:
        """``collection``'s load is no longer committing: its attempt failed (its rows are undone), or the caller
        holds its result."""
        with self._condition:
            self._admitted.discard(collection)
            self._condition.notify_all()
