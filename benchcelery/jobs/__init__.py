"""Jobs: enqueueing, executing, registries and inspection."""
