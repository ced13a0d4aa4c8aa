"""Database access: models, engine and unit of work."""
