"""Latent and text-encoder caches, so that unchanged work is never redone.

A latent's cache key is a digest of the image file's bytes, the VAE's fingerprint,
the bucket (size, resize and crop) and the flip. Any of those changing yields a new
key, so an edited image, another VAE or a new bucket setting re-encodes exactly the
affected images; everything else is read back. Latents are the VAE posterior's mean
(deterministic, so the cache is a pure function of its key), scaled by the VAE's
``scaling_factor``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from trainer.data import ImageRecord, load_pixels
from trainer.text import Encoded

logger = logging.getLogger(__name__)


class VaeEncoder:
    """Pixels → scaled latents (the posterior mean); counts every image it encodes.

    The count is what tests and the worker read to know how much VAE work a run did,
    whether through the cache or per step without one.
    """

    def __init__(self, vae: torch.nn.Module, device: torch.device) -> None:
        self.vae = vae
        self.device = device
        self.images = 0

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            posterior = self.vae.encode(pixels.to(self.device, torch.float32)).latent_dist
            latents = posterior.mode() * self.vae.config.scaling_factor
        self.images += pixels.shape[0]
        return latents

    def encode_records(self, records: list[ImageRecord], flips: list[bool]) -> torch.Tensor:
        """Load, crop and encode images now (the path without a latent cache)."""
        pixels = torch.stack([load_pixels(r, flip=f) for r, f in zip(records, flips, strict=True)])
        return self(pixels)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class LatentCache:
    """Latents by key, in memory and optionally on disk; counts what it encodes."""

    def __init__(
        self,
        encode: Callable[[torch.Tensor], torch.Tensor],
        vae_id: str,
        *,
        disk_dir: Path | None,
        keep_in_memory: bool = True,
        encode_batch_size: int = 4,
    ) -> None:
        self._encode = encode
        self._vae_id = vae_id
        self._disk_dir = disk_dir
        self._keep = keep_in_memory
        self._batch_size = max(1, encode_batch_size)
        self._memory: dict[str, torch.Tensor] = {}
        self._digests: dict[Path, str] = {}
        self.reused = 0
        """Latents read back from disk instead of encoded."""
        if disk_dir is not None:
            disk_dir.mkdir(parents=True, exist_ok=True)

    def key(self, record: ImageRecord, flip: bool) -> str:
        """The cache key of one image as trained (its bytes, VAE, bucket, crop, flip)."""
        digest = self._digests.get(record.path)
        if digest is None:
            digest = self._digests[record.path] = file_digest(record.path)
        a = record.assignment
        text = f"{digest}|{self._vae_id}|{a.bucket}|{a.resized}|{a.crop}|flip={flip}"
        return hashlib.sha256(text.encode()).hexdigest()[:40]

    def fill(
        self, records: Iterable[ImageRecord], progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Make sure every record (and its mirror, with ``flip_aug``) is cached."""
        wanted = [
            (r, flip) for r in records for flip in ((False, True) if r.flip_aug else (False,))
        ]
        missing: list[tuple[ImageRecord, bool, str]] = []
        for record, flip in wanted:
            key = self.key(record, flip)
            if key in self._memory:
                continue
            loaded = self._read_disk(key)
            if loaded is not None:
                self.reused += 1
                if self._keep:
                    self._memory[key] = loaded
                continue
            missing.append((record, flip, key))
        # Encode bucket by bucket so every VAE batch has one shape.
        missing.sort(key=lambda item: item[0].bucket)
        done = 0
        for start in range(0, len(missing), self._batch_size):
            chunk = missing[start : start + self._batch_size]
            buckets = {item[0].bucket for item in chunk}
            for bucket in sorted(buckets):
                part = [item for item in chunk if item[0].bucket == bucket]
                self._encode_and_store(part)
            done += len(chunk)
            if progress is not None:
                progress(done, len(missing))
        if missing or self.reused:
            logger.info("latent cache: %d encoded, %d read from disk", len(missing), self.reused)

    def get(self, record: ImageRecord, flip: bool) -> torch.Tensor:
        """The cached latent of one image (encoding it now if it is not cached yet)."""
        key = self.key(record, flip)
        latent = self._memory.get(key)
        if latent is None:
            latent = self._read_disk(key)
            if latent is None:
                return self._encode_and_store([(record, flip, key)])[0]
            self.reused += 1
            if self._keep:
                self._memory[key] = latent
        return latent

    def _encode_and_store(self, items: list[tuple[ImageRecord, bool, str]]) -> list[torch.Tensor]:
        pixels = torch.stack([load_pixels(record, flip=flip) for record, flip, _ in items])
        latents = self._encode(pixels).float().cpu()
        result = []
        for (_, _, key), latent in zip(items, latents, strict=True):
            latent = latent.contiguous()
            if self._keep:
                self._memory[key] = latent
            if self._disk_dir is not None:
                # Write then rename: an interrupted run never leaves a torn cache file.
                target = self._disk_dir / f"{key}.safetensors"
                partial = target.with_suffix(".partial")
                save_file({"latent": latent}, str(partial))
                partial.replace(target)
            result.append(latent)
        return result

    def _read_disk(self, key: str) -> torch.Tensor | None:
        if self._disk_dir is None:
            return None
        path = self._disk_dir / f"{key}.safetensors"
        if not path.exists():
            return None
        try:
            return load_file(str(path))["latent"]
        except (OSError, KeyError, RuntimeError):
            logger.warning("unreadable latent cache file %s: re-encoding", path)
            return None


class TextEncoderCache:
    """Text-encoder outputs per caption, valid only while the encoders are frozen."""

    def __init__(self, encode: Callable[[list[str]], Encoded]) -> None:
        self._encode = encode
        self._memory: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.encoded = 0

    def fill(self, captions: Iterable[str]) -> None:
        missing = sorted({c for c in captions if c not in self._memory})
        for start in range(0, len(missing), 32):
            chunk = missing[start : start + 32]
            hidden, pooled = self._encode(chunk)
            for i, caption in enumerate(chunk):
                self._memory[caption] = (hidden[i], None if pooled is None else pooled[i])
            self.encoded += len(chunk)

    def get(self, captions: list[str]) -> Encoded:
        self.fill(captions)
        entries = [self._memory[c] for c in captions]
        pooled = [p for _, p in entries]
        return Encoded(
            torch.stack([h for h, _ in entries]),
            None if pooled[0] is None else torch.stack(pooled),  # type: ignore[arg-type]
        )
