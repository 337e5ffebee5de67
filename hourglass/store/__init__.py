"""The PostgreSQL store: the only part of hourglass that speaks SQL.

Modules are named after tables (`jobs`, `runs`) and their functions entity first, then verb
(`fires.fire_due`, `claims.lock_queued`). Every function takes the connection to work on, so a
caller can put several of them in one transaction, and takes `now` from its caller's clock
rather than the database's, so tests control time.
"""
