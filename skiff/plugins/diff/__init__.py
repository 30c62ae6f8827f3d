"""Layer diff plugins: tar apply (confined extraction) and diff creation."""
