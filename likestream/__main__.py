import sys

from likestream.cli import main

sys.exit(main())
