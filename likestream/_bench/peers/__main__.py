"""``python -m likestream._bench.peers``: build and install the peers (``make peers``)."""

import sys

from likestream._bench._peers import main

sys.exit(main())
