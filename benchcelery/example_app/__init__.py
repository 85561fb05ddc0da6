"""jobs_demo: the example app ``bench init --example-app`` installs into ``apps/jobs_demo``."""
