"""Slurm access, for every context that asks the scheduler something.

`scheduler` is the one interface (`get_scheduler`), answered by `cli_backend` (the Slurm
commands) or `pyslurm_backend` (where pyslurm matches the site's Slurm). `squeue` plans a
query and reads its answer in the JSON (`squeue_json`) or text (`squeue_text`) form; `jobs`
holds the job records; `watcher` is the backed-off poller a launcher shares between sessions;
`config` reads `scontrol show config`.
"""
