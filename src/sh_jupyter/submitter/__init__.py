"""The submit side (as the user, on a login node, a portal or a hub host).

`request` validates a request against the site's limits, `submission` creates the session
directory and submits the job, `tracking` follows it, `card` turns a session's status and
Slurm's view of its job into the job card.
"""
