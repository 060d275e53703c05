"""``likestream bench``: throughput, latency, fan-out and state benchmarks against same-run
baselines.

Every scenario starts from nothing: the bench starts its own embedded broker (free ports,
a temporary state dir) and its own ``likestream worker`` (and ``gateway``) processes, and
stops them. Each figure is reported beside a baseline measured in the same run on the same
machine where there is one, since absolute figures on shared machines are noisy:

* ``ingest`` (``_ingest``): N pre-produced Zipf-skewed events folded by one worker from a
  cold start, against a bare aiokafka consumer that decodes the same JSON and counts in a
  dict;
* ``reads`` (``_reads_bench``): ``GET /items/{id}/likes`` at maximum rate and at fixed rates,
  against a bare aiohttp handler returning a dict lookup;
* ``state`` (``_state_bench``): M distinct memberships: worker RSS, disk use, and recovery from
  the changelog after the data dir is deleted;
* ``latency`` (``_latency``): load at 50% of the measured ingest rate, time from produce to
  the WebSocket frame showing the change;
* ``fanout`` (``_fanout``): the most WebSocket clients of one hot item whose p99 delivery
  stays under 1 s, on a gateway (one worker folding beside it), then on the worker;
* ``idle`` (``_idle``): idle subscribed WebSocket connections on one gateway, its RSS per
  step and per connection;
* ``ingest-live`` (``_ingest_live``): a worker's ingest rate with live subscribers on a
  gateway, against its rate with none;
* ``soak`` (``_soak``, not in the standard set: its own command, ``--minutes``): steady
  writes at half a calibrated maximum, reads, live subscribers and a worker SIGKILL,
  sampled every minute (``_soak_report``) and checked event by event at the end.

``_lab`` holds the broker, worker and gateway processes, ``_audience`` the WebSocket clients
(in helper processes) and the delay accounting, ``_wsclient`` the lean WebSocket protocol
they speak, ``_report`` the tables and BENCHMARKS.md, ``_cli`` the command. Progress goes to
stderr; results to ``DIR/results.json`` and ``DIR/results.md``, and with ``--report`` to a
full BENCHMARKS.md.
"""

from likestream.devtools.bench._cli import SCENARIOS, add_parser, run_bench

__all__ = ["SCENARIOS", "add_parser", "run_bench"]
