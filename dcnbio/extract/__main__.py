"""``python -m dcnbio.extract``: the ``dcnbio extract`` command (:mod:`dcnbio.extract.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
