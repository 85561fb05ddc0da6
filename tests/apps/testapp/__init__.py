"""An app for the tests: jobs that report what they saw into Redis lists the tests read."""
