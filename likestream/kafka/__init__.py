"""Kafka I/O: how likestream talks to Kafka.

The one client factory (``_factory``: every producer, consumer, admin client and the faust
app get their bootstrap servers and security options from ``KafkaConfig``), batched sends
to one partition (``_sender``), creating the app's topics (``_topics``), the worker's
group-membership keep-alive (``_membership``), and the one door to the private attributes
of faust, mode and aiokafka (``_internals``, checked at start-up and pinned by a test).

Rule (tests/unit/test_layout.py, docs/ARCHITECTURE.md#layout): imports only the domain
(``likestream.domain``), the settings (``likestream.config``) and itself.
"""

__all__: list[str] = []
