"""`python -m sh_jupyter.node prolog|epilog`: the hooks' entry (slurm/prolog, slurm/epilog)."""

import sys

from sh_jupyter.node.entry import main

sys.exit(main(sys.argv[1:]))
