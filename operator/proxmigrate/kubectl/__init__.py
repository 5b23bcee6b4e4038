"""`kubectl proxmigrate`: drain, cancel, plan, watch and release finalizers from the command line.

Installed as the console script `kubectl-proxmigrate` (entry point `proxmigrate.kubectl.cli:main`),
which kubectl runs as a plugin. It needs nothing but the user's kubeconfig: it creates, reads
and deletes NodeDrains and the operator does the rest. One module per job: `cli` (flags and
exit statuses), `session` (kubeconfig and API calls), `tables` and `progress` (pure
rendering, shared with `make demo`), and one module per subcommand.
"""
