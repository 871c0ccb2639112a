"""The Slurm Prolog and Epilog (`python -m sh_jupyter.node prolog|epilog`), run as root.

`entry` is what slurmd runs for every job: `jobmatch` says, from the environment alone, whether
the job is a session; for a session `hooks` does root's work (as the user where it can). Nothing
is imported here: a job that is not a session must cost next to nothing.
"""
