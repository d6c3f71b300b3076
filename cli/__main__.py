"""`python -m lossforge.cli`: the same command line as the `lossforge` script."""
from lossforge.cli import main

if __name__ == "__main__":
    main()
