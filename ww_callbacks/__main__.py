"""``python -m ww_callbacks``: the ``ww-callbacks`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
