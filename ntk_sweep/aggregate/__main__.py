"""``python -m ntk_sweep.aggregate``: the ``ntk-aggregate`` command line."""

import sys

from ntk_sweep.aggregate.cli import main

sys.exit(main())
