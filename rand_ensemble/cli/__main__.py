"""`python -m rand_ensemble.cli ...` runs the `rand-ensemble` command."""
import sys

from rand_ensemble.cli.main import main

if __name__ == "__main__":      # importing this module (the API reference does) runs nothing
    sys.exit(main())
