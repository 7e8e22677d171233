"""shoal.providers."""
