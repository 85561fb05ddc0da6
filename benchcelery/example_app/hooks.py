"""Hooks of the example app (Frappe's format)."""

before_job = ["jobs_demo.tasks.before_job"]
after_job = ["jobs_demo.tasks.after_job"]

scheduler_events = {
    "all": ["jobs_demo.tasks.tick"],
    "daily": ["jobs_demo.tasks.daily_report"],
}
