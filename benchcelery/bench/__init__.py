"""The bench on disk and its configuration: layout, config, schema, Redis key names, hosts.

Imports nothing of benchcelery outside this package but ``errors``.
"""
