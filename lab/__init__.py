"""LoRA Lab's domain core: pure code that every other package may use.

Nothing here imports torch, discord, sqlalchemy or celery (see docs/architecture.md).
"""
