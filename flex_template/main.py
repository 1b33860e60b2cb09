"""What the Dataflow Flex Template launcher runs (FLEX_TEMPLATE_PYTHON_PY_FILE): the same
command line as `woopra-pipeline`, submitting the job without waiting for it to end."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], wait=False))
