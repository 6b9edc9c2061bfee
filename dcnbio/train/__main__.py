"""``python -m dcnbio.train``: the ``dcnbio train`` command (:mod:`dcnbio.train.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
