"""The Celery app and its thin tasks: ingest, caption, train, sample."""
