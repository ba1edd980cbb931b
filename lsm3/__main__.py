"""``python -m lsm3``: the lsm3 command line (see :mod:`lsm3.cli`)."""

import sys

from lsm3.cli import main

if __name__ == "__main__":
    sys.exit(main())
