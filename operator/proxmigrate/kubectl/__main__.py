"""`python -m proxmigrate.kubectl`: what krew's launcher (plugins/krew/kubectl-proxmigrate) runs."""

import sys

from proxmigrate.kubectl.cli import main

sys.exit(main())
