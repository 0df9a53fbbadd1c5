import sys

from natlens.cli import main

if __name__ == "__main__":  # not when a worker process (natlens.parallel) imports the main module
    sys.exit(main())
