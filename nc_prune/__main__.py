"""``python -m nc_prune``: the same as the ``nc-prune`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
