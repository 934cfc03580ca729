"""`/caption upload`'s reading: the .txt files of an upload, under caption-sized caps."""

from __future__ import annotations

from pathlib import Path

from lab.captions import decode_caption
from lab.dataset.reasons import DatasetError, Reason, Rejection
from lab.dataset.settings import IngestSettings
from lab.dataset.sources import SourceFile, from_uploads


def caption_texts(files: list[tuple[str, Path]], settings: IngestSettings) -> dict[str, str]:
    """Name → text of every caption in ``files`` (blocking: run it in the I/O pool).

    A zip's entries are inflated with a caption's cap, not an image's, and all of the
    text together stops at ``caption_upload_max_bytes``: a small zip of captions cannot
    expand to gigabytes. Raises :class:`DatasetError` for a caption that cannot be used.
    """
    budget = settings.caption_upload_max_bytes
    capped = settings.model_copy(
        update={"zip_max_entry_bytes": settings.caption_max_bytes, "zip_max_total_bytes": budget}
    )
    over = DatasetError(
        Reason.CAPTION_TOO_LARGE,
        f"The captions of this upload pass {budget / 2**20:.0f} MiB in total; "
        "upload them in smaller parts.",
    )
    texts: dict[str, str] = {}
    total = 0
    for item in from_uploads(files, capped):
        if isinstance(item, Rejection) and item.code is Reason.ZIP_BOMB:
            raise over
        if not isinstance(item, SourceFile) or not item.is_caption:
            continue
        data = item.read(settings.caption_max_bytes)
        total += len(data)
        if total > budget:
            raise over
        texts[item.name] = decode_caption(data, item.name, settings.caption_max_bytes)
    return texts
