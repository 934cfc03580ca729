"""Upload material: distinct noise images (distinct perceptual hashes) and zips — the
same generator the demo uploads with."""

from loralab.demo.materials import png, zip_of

__all__ = ["png", "zip_of"]
