"""What a load logs while it runs: a line every ``PROGRESS_LOG_EVERY_SECONDS`` of a read, and one per committed chunk
with its documents, bytes, rate and an ETA from MongoDB's estimate of the collection's size."""

from __future__ import annotations

import logging
import time

from mongodb_dlt.results import ExtractStats

PROGRESS_LOG_EVERY_SECONDS = 10.0


class ChunkLogger:
    """Logs each committed chunk: its documents, bytes and rate, and how far the read is, with an ETA from MongoDB's
    estimate of the collection's size (for a snapshot, or an incremental read's first load)."""

    def __init__(self, label: str, log: logging.Logger, stats: ExtractStats, whole_read: bool) -> None:
        self.label = label
        self.log = log
        self.stats = stats
        self.whole_read = whole_read
        self.chunks = 0
        self.run_started = self.chunk_started = time.monotonic()
        self.documents = self.bytes = 0

    def committed(self) -> None:
        now = time.monotonic()
        self.chunks += 1
        stats = self.stats
        documents = stats.documents - self.documents
        size = stats.bytes - self.bytes
        elapsed = max(now - self.chunk_started, 1e-9)
        line = (f"{self.label}: chunk {self.chunks} committed: {documents:,} documents, {size / 1e6:,.1f} MB in "
                f"{elapsed:.1f}s ({documents / elapsed:,.0f} documents/s)")
        snapshot = stats.snapshot
        done = snapshot.documents if snapshot is not None else stats.documents
        estimate = stats.estimated_documents
        if snapshot is not None:
            line += f"; snapshot: {done:,} documents in {snapshot.chunks} chunk(s)"
        if estimate and (snapshot is not None or self.whole_read) and not stats.read_complete:
            rate = stats.documents / max(now - self.run_started, 1e-9)
            left = max(estimate - done, 0)
            line += f", about {min(done / estimate, 1):.0%} of ~{estimate:,}"
            if rate > 0:
                line += f", about {duration(left / rate)} left"
        elif stats.read_complete:
            line += "; the read is complete"
        self.log.info(line)
        self.chunk_started, self.documents, self.bytes = now, stats.documents, stats.bytes


def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class ProgressLogger:
    """Logs the running total of documents read at most every few seconds, from the second batch on: the first
    batch's wait includes the server's query planning and sorting, which says nothing about the read's speed."""

    def __init__(self, label: str, log: logging.Logger) -> None:
        self.label = label
        self.log = log
        self.first_batch_at: float | None = None
        self.first_batch_documents = 0
        self.last_logged = 0.0

    def __call__(self, documents: int) -> None:
        now = time.monotonic()
        if self.first_batch_at is None:
            self.first_batch_at = self.last_logged = now
            self.first_batch_documents = documents
            return
        if now - self.last_logged >= PROGRESS_LOG_EVERY_SECONDS:
            self.last_logged = now
            # the rate since the first batch arrived: documents per second of reading, not of waiting to start
            elapsed = now - self.first_batch_at
            rate = (documents - self.first_batch_documents) / elapsed if elapsed > 0 else 0.0
            self.log.info(f"{self.label}: {documents:,} documents read ({rate:,.0f}/s)")
