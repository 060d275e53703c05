"""The domain: likestream's rules, with no I/O.

What a like event is and how it is checked and encoded (``_schema``), which partition an
item lives on (``_partition``, Kafka's murmur2), the trending windows and their time rules
(``_window_spec``), the trending topic's records and how partitions' tops merge
(``_top``), what a valid bearer token is (``_tokens``), the API's wire types as the API
client sees them (``_api_types``), and the one backoff of everything that retries
(``_retry``).

Rule (tests/unit/test_layout.py, docs/ARCHITECTURE.md#layout): nothing here imports
anything else from likestream, so every other room may use it.
"""

__all__: list[str] = []
