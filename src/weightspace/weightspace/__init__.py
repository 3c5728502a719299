"""weightspace stage."""
