"""What the daemon knows and keeps: the SQLite journal, the source of truth after a restart,
and the in-memory model that every commit writes through.
"""
