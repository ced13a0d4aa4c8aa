"""`python -m connector_cli` is the `connector` command."""

import sys

from connector_cli.main import main

sys.exit(main())
