import sys

from osep_nas.cli import main

sys.exit(main())
