"""Jobs of the high-availability tests: each run is counted in a Redis that never fails over."""
