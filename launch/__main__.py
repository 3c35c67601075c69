"""`python -m launch worker` = `lrpseg worker` (what `lrpseg serve` and the tests start)."""

from launch.cli import main

raise SystemExit(main())
