"""SMP subscriptions: ``client`` (one SMP connection) and, later, ``pool`` (one connection per SMP server)."""
