"""shoal.daemon."""
