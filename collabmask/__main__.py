"""`python -m collabmask …`, the same as the `collabmask` command."""

import sys

from collabmask.cli import main

sys.exit(main())
