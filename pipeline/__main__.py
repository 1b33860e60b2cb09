"""`python -m pipeline` runs the same as `woopra-pipeline`."""

import sys

from pipeline.cli import main

sys.exit(main())
