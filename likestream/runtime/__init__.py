"""The runtime: the processes and what wires them together.

The worker (``_worker``, the faust app in ``_faust_app``), the gateway and its supervisor
(``_gateway``, ``_supervisor``), the periodic sampler (``_sampler``), what a process proves
and checks with (``_credentials``, ``_secret``, ``_jwks``), observability (``_metrics``,
``_logging``), and the bodies of the CLI's commands (``_flags``, ``_produce``, ``_erase``,
``_status_report``, ``_progress``), plus the API client's live feed (``_live``) and two
small helpers (``_pids``, ``_cache_dir``).

Rule (tests/unit/test_layout.py, docs/ARCHITECTURE.md#layout): may import the domain,
Kafka I/O, agents, tables and web, never the developer tools. Of this room, agents/,
tables/ and web/ may use only ``_metrics``, ``_logging`` and ``_pids``, which import
nothing above Kafka I/O.
"""

__all__: list[str] = []
