"""``python -m qmoe_tfq``: the command line."""
import sys

import qmoe_tfq  # noqa: F401  (selects tf_keras before TensorFlow loads)
from qmoe_tfq.cli import main

if __name__ == "__main__":
    sys.exit(main())
