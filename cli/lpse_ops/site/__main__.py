"""``python3 -m lpse_ops.site`` and the zipapp's entry point: lpse-backup."""

import sys

from lpse_ops.site.cli import main

sys.exit(main())
