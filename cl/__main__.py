import sys

from cl.cli import main

sys.exit(main())
