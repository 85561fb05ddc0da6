"""Small OS helpers that know nothing of a bench: process titles, port checks."""
