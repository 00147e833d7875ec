"""Records are acknowledged in offset order per partition, whatever order they finish in."""

from __future__ import annotations

from streams.kafka.acks import InOrderAcks
from streams.pipeline.intake import Record


def rec(offset: int, topic: str = "clicks", partition: int = 0) -> Record:
    return Record(topic, partition, offset, None, b"", {})


def reading(*records: Record) -> InOrderAcks:
    acks = InOrderAcks()
    acks.read_all(records, [f"{r.topic}:{r.partition}:{r.offset}" for r in records])
    return acks


def test_a_record_finished_before_an_earlier_one_waits_for_it() -> None:
    acks = reading(rec(5), rec(6), rec(7))
    # 6 is a dead letter, 5 an event still held for the event clock
    assert acks.finish([rec(6)]) == []
    assert acks.finish([rec(5)]) == ["clicks:0:5", "clicks:0:6"]
    assert acks.finish([rec(7)]) == ["clicks:0:7"]
    assert len(acks) == 0


def test_partitions_do_not_wait_for_each_other() -> None:
    acks = reading(rec(1), rec(1, partition=1), rec(2, partition=1))
    assert acks.finish([rec(2, partition=1), rec(1, partition=1)]) == ["clicks:1:1", "clicks:1:2"]
    assert acks.first_pending() == {("clicks", 0): 1} and len(acks) == 1


def test_a_record_read_again_is_acknowledged_once_through_its_newest_event() -> None:
    acks = reading(rec(3), rec(4))
    acks.read_all([rec(3)], ["again"])  # Faust sought back and delivered it a second time
    assert acks.finish([rec(3)]) == ["again"]
    assert acks.finish([rec(3), rec(4)]) == ["clicks:0:4"]
    assert len(acks) == 0


def test_forgotten_partitions_acknowledge_nothing_more() -> None:
    acks = reading(rec(1), rec(2), rec(9, partition=1))
    acks.forget(("clicks", 0))
    assert acks.finish([rec(1), rec(2)]) == []
    assert acks.first_pending() == {("clicks", 1): 9} and len(acks) == 1


def test_records_of_a_partition_revoked_while_they_ran_are_no_longer_known() -> None:
    # A dead letter of a revoked partition must not be recorded done: the partition's
    # next owner reads again the records the revocation made this worker forget.
    acks = reading(rec(4), rec(5), rec(6, partition=1))
    assert acks.known([rec(5), rec(6, partition=1)]) == [rec(5), rec(6, partition=1)]
    acks.forget(("clicks", 0))
    assert acks.known([rec(5), rec(6, partition=1)]) == [rec(6, partition=1)]
    assert acks.known([rec(7, partition=1)]) == []  # never read
