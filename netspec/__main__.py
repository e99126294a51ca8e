"""`python -m netspec …` is the `netspec` command."""

import sys

from netspec.cli import main

sys.exit(main())
