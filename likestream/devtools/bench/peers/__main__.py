"""``python -m likestream.devtools.bench.peers``: build and install the peers (``make peers``)."""

import sys

from likestream.devtools.bench._peers import main

sys.exit(main())
