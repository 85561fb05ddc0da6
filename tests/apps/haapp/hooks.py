"""The scheduler's job of the failover test: every ``scheduler_interval`` seconds."""

scheduler_events = {
    "all": ["haapp.tasks.tick"],
}
