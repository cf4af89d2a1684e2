"""``python -m stoat_ferret``: the command (:mod:`stoat_ferret._main`)."""

import sys

from stoat_ferret._main import run

if __name__ == "__main__":
    sys.exit(run())
