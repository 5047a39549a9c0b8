"""The process tree behind `python supervisor.py`, modelled on Erlang/OTP supervisors.

specs.py says which children run and how each is probed, child.py runs one OS process,
tree.py keeps them running (ordered start, restarts with backoff, restart intensity,
graceful stop, rolling restart on SIGHUP).
"""
