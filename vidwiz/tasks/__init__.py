"""Tasks for the external workers: the table, scheduling, the atomic claim, results, long-poll wake-ups."""
