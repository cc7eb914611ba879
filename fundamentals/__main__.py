"""`python -m fundamentals ...`: the same as the `fundamentals` command."""

import sys

from .cli import main

sys.exit(main())
