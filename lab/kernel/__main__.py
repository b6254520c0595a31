"""`python -m lab.kernel [options] -- CMD ARGS...`."""

import sys

from .cli import main

sys.exit(main())
