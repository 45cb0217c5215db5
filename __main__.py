"""``python -m gzipscale``: the same command line as the ``gzipscale`` script."""

import sys

from gzipscale.cli import main

sys.exit(main())
