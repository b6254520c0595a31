"""`python -m hadirector.kernellab [options] -- CMD ARGS...` (same as `hadirector kernel-lab`)."""

import sys

from .cli import main

sys.exit(main())
