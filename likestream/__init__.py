"""likestream: exact real-time like counts on Kafka, Faust and RocksDB."""

__version__ = "0.1.0"
