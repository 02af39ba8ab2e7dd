"""``python -m vsrtel``: the command line."""

import sys

from vsrtel.cli import main

sys.exit(main())
