"""``python -m compactor``: the compactor job (see :mod:`compactor.job`)."""

import sys

from compactor.job import main

if __name__ == "__main__":
    sys.exit(main())
