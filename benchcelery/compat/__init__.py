"""Stand-ins for the Frappe and rq APIs that app code and the guide's console snippets use, answering from
benchcelery's own data. They sit above jobs and realtime, beside the public API."""
