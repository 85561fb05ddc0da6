"""Celery + kombu: the Celery app, our Redis transport, delivery (leases, fenced acks) and its Lua scripts."""
