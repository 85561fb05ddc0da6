"""Read-only reports over Redis: pending counts, worker heartbeats, doctor."""
