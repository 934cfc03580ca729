"""Dataset curation: safe ingestion of untrusted uploads, captions, zips, reports, export.

Importing this package is cheap (settings and reason codes only); the working modules
are imported by name:

* :mod:`lab.dataset.image`  — one image: sniff, guard, decode, normalise, re-encode
  (:mod:`lab.dataset.colour` does the pixel conversions).
* :mod:`lab.dataset.ingest` — many files (a folder, a zip, uploads): captions by stem,
  duplicates, near-duplicates, storage by content hash, parallel workers.
* :mod:`lab.dataset.archive` — zip entries read in memory under caps.
* :mod:`lab.dataset.report` — the dataset health report.
* :mod:`lab.dataset.export` — the kohya ``N_<trigger> <class>/`` folder the trainer reads.
"""

from lab.dataset.reasons import DatasetError, Notice, Reason, Rejection, Warn
from lab.dataset.settings import IngestSettings

__all__ = ["DatasetError", "IngestSettings", "Notice", "Reason", "Rejection", "Warn"]
