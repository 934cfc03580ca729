"""SQLAlchemy 2 models, the session factory, repositories and transaction-owning services."""
