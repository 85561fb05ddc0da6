"""The fault scenarios, one module per group: ``workers`` (SIGKILLed and cold-stopped workers, a job
longer than its lease), ``broker`` (Redis crashed, paused, stopped), ``records`` (poison queue
elements, retry of a failed job), ``lifecycle`` (retries and delays under worker and Redis kills)
and ``idle`` (an idle worker's cost and enqueue latency)."""
