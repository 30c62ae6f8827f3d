"""Entry point of the mount helper (see ``helper``)."""

import sys

from skiff.plugins.volumes.nfs.helper import main

sys.exit(main())
