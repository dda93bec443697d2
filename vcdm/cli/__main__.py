"""`python -m vcdm.cli` (what torchrun runs): the `vcdm` command."""

import sys

from vcdm.cli import main

sys.exit(main())
