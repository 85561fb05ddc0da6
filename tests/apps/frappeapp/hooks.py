"""A Frappe app's hooks.py, as Frappe's documentation teaches it (nothing benchcelery-specific)."""

app_name = "frappeapp"
app_title = "Frappe App"

before_job = ["frappeapp.jobs.before_job"]
after_job = ["frappeapp.jobs.after_job"]

scheduler_events = {
    "hourly_maintenance": ["frappeapp.jobs.hourly_cleanup"],
    "daily_maintenance": ["frappeapp.jobs.daily_cleanup"],
    "daily": ["frappeapp.jobs.daily_digest"],
    "cron": {"0/15 * * * *": ["frappeapp.jobs.daily_digest"]},
}
