"""`sh-jupyter doctor`: is this node (and the user on it) ready for a session?

`node` holds the checks of the node and the user, `gpu` those of GPU sessions, `report` the
findings and their rendering.
"""
