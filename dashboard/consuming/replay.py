"""Replay (`consume --from-beginning` / `--reset-to`): where it starts, what it clears first,
and its progress bar."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition
from tqdm import tqdm

from counts import cache
from dashboard import read_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartAt:
    """Where a rebuild starts: the beginning of the log, or the first event at/after a time."""

    timestamp: datetime | None = None

    def offsets(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.timestamp is None:
            for tp in partitions:
                tp.offset = OFFSET_BEGINNING
            return
        ms = int(self.timestamp.timestamp() * 1000)
        wanted = [TopicPartition(tp.topic, tp.partition, ms) for tp in partitions]
        found = consumer.offsets_for_times(wanted, timeout=30)
        for tp, hit in zip(partitions, found, strict=True):
            tp.offset = hit.offset if hit.offset >= 0 else OFFSET_END


def prepare_replay(start_at: StartAt) -> None:
    """From the beginning: rebuild the read model from scratch. From a time: re-apply
    on top of it (equal versions overwrite differing content, which repairs drift).
    Both drop every cached entry."""
    if start_at.timestamp is None:
        read_model.reset()
    logger.info("replay: dropped %d cache entries", cache.drop_all_entries())


class ReplayProgress:
    """A tqdm bar over the events between the replay's start and the partitions' ends."""

    def __init__(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        total = 0
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            start = {OFFSET_BEGINNING: low, OFFSET_END: high}.get(tp.offset, tp.offset)
            total += high - start
        # disable=None: a bar on a terminal, nothing in logs and pipes.
        self._bar = tqdm(total=total, unit="event", desc="replay", disable=None)

    def advance(self, events: int) -> bool:
        """Count processed events; True once the replay has caught up (the bar is closed)."""
        self._bar.update(events)
        if self._bar.n < self._bar.total:
            return False
        self.close()
        logger.info("replay: caught up with the log; consuming live")
        return True

    def close(self) -> None:
        self._bar.close()
