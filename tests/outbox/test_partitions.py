"""The partition of a key, as the producer's murmur2 partitioner places it."""

from __future__ import annotations

import pytest

from outbox.partitions import murmur2, partition_for

# The test vectors of the Java client's `Utils.murmur2` (Kafka's UtilsTest), signed there.
JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize(("data", "signed"), JAVA_MURMUR2.items())
def test_murmur2_matches_the_java_client(data, signed):
    assert murmur2(data.encode()) == signed % 2**32


def test_a_key_maps_to_one_partition_of_the_topic():
    assert partition_for("foobar", 3) == (-790332482 & 0x7FFFFFFF) % 3
    assert {partition_for(f"key-{n}", 6) for n in range(100)} == set(range(6))
