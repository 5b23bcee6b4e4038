"""Run-time orchestration of one ProxmoxCluster: I/O around the pure engine."""
