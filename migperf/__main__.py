import sys

from migperf.cli import main

sys.exit(main())
