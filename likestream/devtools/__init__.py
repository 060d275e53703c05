"""Developer tools: the embedded Kafka broker (``_broker``) and the benchmarks (``bench``).

Not in the production image (the Dockerfile removes this package before installing), so
nothing imports it but ``likestream/cli.py`` (inside the ``broker`` and ``bench``
commands, which say "developer tools are not in this install" where it is missing) and
the tests (tests/unit/test_layout.py checks both; docs/ARCHITECTURE.md#layout).
"""

__all__: list[str] = []
