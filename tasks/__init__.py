"""Task folders: each one plugs a dataset, adapters, a head and metrics into attnlab."""
