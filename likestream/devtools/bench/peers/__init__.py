"""The peer programs of ``likestream bench ingest`` (see ``likestream.devtools.bench._peers``).

``kstreams/`` is a Maven project (Kafka Streams, Java) that the bench builds into a cache
outside the repository; ``quix_peer.py`` runs under a virtualenv of its own. Neither is
imported by likestream; ``python -m likestream.devtools.bench.peers`` prepares both.
"""

__all__: list[str] = []
