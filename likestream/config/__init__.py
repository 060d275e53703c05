"""The settings: every ``LIKESTREAM_*`` variable, typed, documented and validated.

``_settings`` holds them frozen (a bad value stops start-up naming the variable); the
environment is read only when the runtime calls ``load_settings``, so every room above can
take a ``Settings`` without reading it.

Rule (tests/unit/test_layout.py, docs/ARCHITECTURE.md#layout): imports only the domain
(``likestream.domain``) and itself.
"""

__all__: list[str] = []
