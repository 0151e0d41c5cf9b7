"""The supervisor: ``[server] workers`` processes of one instance on one port and one store (README "Workers").

``processes.py`` starts one worker process and speaks to it; ``supervisor.py`` runs the workers, restarts one
that dies and drains them all on SIGTERM; ``worker.py`` is a worker process's entry point; ``role.py`` is what
sets one worker apart from the others; ``port.py`` is the instance's claim on its port (no second instance shares
it). This package imports the server; the server imports only ``role``.
"""
