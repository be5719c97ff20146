"""`python -m cli`: the orchestra command without the console script."""

import sys

from cli import main

sys.exit(main())
