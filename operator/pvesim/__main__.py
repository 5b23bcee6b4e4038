import sys

from pvesim.cli import main

sys.exit(main())
