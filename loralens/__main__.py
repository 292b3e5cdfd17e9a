import sys

from loralens.cli import main

sys.exit(main())
