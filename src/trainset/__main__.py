"""``python -m trainset``: the ``trainset`` command."""

import sys

from trainset.cli import main

sys.exit(main())
