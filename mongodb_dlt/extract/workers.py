"""Converting a read's batches in worker processes, in order, with a bounded number in flight.

The pool is process-wide (one worker per core, at most two) and shared by every collection loading in the
process. A read converts its first batches itself and hands batches to the workers only once they answer, so a
small (incremental) read never pays for starting them. At most ``BATCHES_IN_FLIGHT_PER_PROCESS`` batches per
worker are in flight, so memory stays bounded by the batch size, not by the collection's.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from mongodb_dlt.extract.bson_arrow import (
    Boundary,
    ConversionSettings,
    ConvertedBatch,
    convert_raw_batch,
    locate_conversion_error,
)

CONVERSION_PROCESSES = max(1, min(2, os.cpu_count() or 1))
"""Worker processes converting BSON to Arrow, shared by every collection loading in this process."""
BATCHES_IN_FLIGHT_PER_PROCESS = 2
"""Batches sent ahead to each conversion process: keeps them busy while memory stays bounded."""
BATCHES_BEFORE_WORKERS = 4
"""Batches a collection converts in this process before it starts the worker pool: starting workers costs about a
second of CPU per worker, which a small (incremental) read never earns back."""

_pool: ProcessPoolExecutor | None = None
_warm_up: Future[int] | None = None
"""A no-op task sent first: it is done once a worker has started and answers."""
_pool_lock = threading.Lock()


def _conversion_pool() -> ProcessPoolExecutor:
    """The process-wide pool of conversion workers, started on first use (spawned: the caller has threads)."""
    global _pool, _warm_up
    with _pool_lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(CONVERSION_PROCESSES, mp_context=multiprocessing.get_context("spawn"))
            # A process that is itself a multiprocessing child (a Dagster step) joins its children before the
            # interpreter's exit hooks run, so the idle workers would be waited for forever: stop them first,
            # before the pool's own queues close (their finalizers have priority 10).
            multiprocessing.util.Finalize(_pool, _pool.shutdown, kwargs={"cancel_futures": True}, exitpriority=100)
            _warm_up = _pool.submit(int)
        return _pool


def _workers_ready() -> bool:
    """True once the conversion workers answer; the first call starts them."""
    _conversion_pool()
    return _warm_up is not None and _warm_up.done()


class ConversionQueue:
    """One read's batches on their way to Arrow: ``put`` each raw batch, take converted ones in read order from
    ``take`` (those done, or the oldest once too many are in flight) and finally ``drain``. A batch that cannot
    be converted raises ``DocumentConversionError`` naming the document and field."""

    def __init__(self, label: str, processes: int | None = None) -> None:
        self.label = label
        self.processes = CONVERSION_PROCESSES if processes is None else processes
        self.in_flight = max(1, self.processes) * BATCHES_IN_FLIGHT_PER_PROCESS
        self.pending: deque[tuple[Future[ConvertedBatch], bytes, ConversionSettings, Boundary | None]] = deque()
        self.put_count = 0
        self.in_workers = 0
        """Batches converted by the worker processes rather than in this one."""

    def put(self, raw: bytes, settings: ConversionSettings, boundary: Boundary | None) -> None:
        if self.processes == 0 or self.put_count < BATCHES_BEFORE_WORKERS or not _workers_ready():
            # in this process until the workers have started (they start after the first few batches, in the
            # background): a small collection never waits for them, a large one never idles meanwhile
            future: Future[ConvertedBatch] = Future()
            future.set_result(self._convert(raw, settings, boundary))
        else:
            future = _conversion_pool().submit(convert_raw_batch, raw, settings, boundary)
            self.in_workers += 1
        self.put_count += 1
        self.pending.append((future, raw, settings, boundary))

    def take(self) -> Iterator[ConvertedBatch]:
        while len(self.pending) >= self.in_flight or (self.pending and self.pending[0][0].done()):
            yield self._next()

    def drain(self) -> Iterator[ConvertedBatch]:
        while self.pending:
            yield self._next()

    def _next(self) -> ConvertedBatch:
        future, raw, settings, boundary = self.pending.popleft()
        try:
            return future.result()
        except Exception as error:
            raise locate_conversion_error(raw, settings, boundary, self.label, error) from error

    def _convert(self, raw: bytes, settings: ConversionSettings, boundary: Boundary | None) -> ConvertedBatch:
        try:
            return convert_raw_batch(raw, settings, boundary)
        except Exception as error:
            raise locate_conversion_error(raw, settings, boundary, self.label, error) from error
