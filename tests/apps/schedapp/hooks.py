"""Scheduled jobs of the scheduler tests (tests rewrite this file in their bench copy)."""

scheduler_events = {
    "all": ["schedapp.tasks.tick"],
}
