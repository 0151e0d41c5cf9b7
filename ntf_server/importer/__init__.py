"""`ntf-server import-simplex`: migrate a Haskell ntf-server's users (its PostgreSQL store, §6.1) into
our store, keeping token and subscription ids, statuses, keys, secrets, cron state and last notifications,
so no app has to register again.

reader.py (psycopg, one read-only snapshot) → mapping.py (pure: rows → records, or a reason to refuse) →
writer.py (counts, batches) → store/importing.py (one atomic Lua script per token); command.py is the CLI
glue (state lock, embedded Redis), progress.py the bar.
"""
