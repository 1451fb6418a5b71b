import sys

from mlret_plugin.cli.main import main

sys.exit(main())
