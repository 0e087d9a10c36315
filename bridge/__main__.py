# host-only. `python -m bridge ...` is the same as the `aixin` console command.
import sys

from bridge.cli import main

sys.exit(main())
