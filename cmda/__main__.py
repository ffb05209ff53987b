"""`python -m cmda ...` is `cmda ...`."""

import sys

from cmda.cli import main

sys.exit(main())
