"""``python -m xcyto`` (and ``torchrun -m xcyto train ...``) runs the command line."""
import sys

from xcyto.cli import main

sys.exit(main())
