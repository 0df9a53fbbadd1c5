import sys

from natlens.cli import main

sys.exit(main())
