import sys

from oot_hud.cli import main

sys.exit(main())
