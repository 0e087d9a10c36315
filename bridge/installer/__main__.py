# host-only. `python -m bridge.installer ...` (what ./flash.sh runs).
import sys

from bridge.installer.flash import main

sys.exit(main())
