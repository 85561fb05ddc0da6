"""Redis without Celery: clients, Sentinel, durable writes, the Redis server finder. Imports only bench/."""
