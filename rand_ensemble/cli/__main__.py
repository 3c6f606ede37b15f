"""`python -m rand_ensemble.cli ...` runs the `rand-ensemble` command."""
import sys

from rand_ensemble.cli.main import main

sys.exit(main())
