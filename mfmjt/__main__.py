"""``python -m mfmjt ...`` runs the command line, the same as the ``mfmjt`` script."""

import sys

from mfmjt.cli import main

sys.exit(main())
