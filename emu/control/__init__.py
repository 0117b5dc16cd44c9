"""Control plane inside a run's namespaces: SNO core daemons and agents (``sno``), the process supervisor."""
