"""The partitioner agrees with Kafka's Java default partitioner.

Vectors computed with org.apache.kafka.common.utils.Utils.murmur2 / toPositive
from kafka-clients 4.1.1 (the jars the embedded broker uses).
"""

import pytest
from aiokafka.partitioner import murmur2

from likestream.client import by_item
from likestream.domain._partition import partition_for

JAVA = [
    ("21", -973932308, 4, 0),
    ("foobar", -790332482, 6, 6),
    ("a-little-bit-long-string", -985981536, 0, 8),
    ("post:9", 444803561, 1, 5),
    ("item:0", 1095432770, 2, 2),
    ("u42", -293379993, 7, 11),
    ("ünïcødé", 2147241326, 6, 2),
    ("x", 2121525046, 6, 10),
]


@pytest.mark.parametrize(("key", "java_hash", "of_8", "of_12"), JAVA)
def test_matches_java(key: str, java_hash: int, of_8: int, of_12: int) -> None:
    signed = murmur2(key.encode())
    assert (signed if signed < 2**31 else signed - 2**32) == java_hash
    assert partition_for(key.encode(), 8) == of_8
    assert partition_for(key.encode(), 12) == of_12


@pytest.mark.parametrize(("key", "java_hash", "of_8", "of_12"), JAVA)
def test_client_partitioner_is_java_s(key: str, java_hash: int, of_8: int, of_12: int) -> None:
    # aiokafka hands the partitioner the partition ids in no promised order.
    assert by_item(key.encode(), [5, 3, 7, 1, 0, 2, 6, 4], []) == of_8
    assert by_item(key.encode(), list(range(11, -1, -1)), [0]) == of_12
