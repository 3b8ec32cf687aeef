import sys

from attnflows_panel.cli import main

sys.exit(main())
