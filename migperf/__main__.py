"""``python -m migperf info|plan|apply|reset|run|report`` (see :mod:`migperf.cli`)."""
from migperf.cli import main

raise SystemExit(main())
