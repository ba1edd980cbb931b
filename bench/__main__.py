"""`python -m bench` runs the benchmark runner (see bench/run.py)."""

from bench.run import main

raise SystemExit(main())
