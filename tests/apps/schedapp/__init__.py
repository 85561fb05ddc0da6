"""A test app with scheduled jobs; the scheduler tests rewrite its hooks.py in each bench."""
