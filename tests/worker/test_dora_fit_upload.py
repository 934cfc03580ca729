"""A DoRA job stores the trainer's plain-LoRA fit beside each epoch's file, where the
release post looks for it."""

from __future__ import annotations

from safetensors import safe_open
from sqlalchemy import select

from db.models import Artifact, ArtifactKind, JobStatus, Ticket
from db.training import release_view
from lab.apps import compat_filename
from tests.worker.conftest import seed_started_job
from worker.runner import run_training_job
from worker.runtime import build_runtime


def test_each_dora_epoch_has_its_fit_in_storage(sqlite_settings, tmp_path):
    dora = {"network_module": "lycoris.kohya", "network_args": ["algo=lora", "dora_wd=True"]}
    seeded = seed_started_job(sqlite_settings, max_train_epochs=2, **dora)
    rt = build_runtime(sqlite_settings)
    assert run_training_job(rt, seeded.job_id, 1) is JobStatus.SUCCEEDED
    with rt.factory() as session:
        loras = session.scalars(
            select(Artifact).where(
                Artifact.job_id == seeded.job_id, Artifact.kind == ArtifactKind.LORA
            )
        ).all()
    assert sorted(a.epoch for a in loras) == [1, 2]
    for artifact in loras:
        fit = rt.storage.download(compat_filename(artifact.storage_key), tmp_path / "fit.st")
        meta = safe_open(str(fit), "pt").metadata()
        assert meta["ss_network_module"] == "networks.lora"
        assert 0 < float(meta["loralab_dora_compat_relative_error"]) < 1
    with rt.factory.begin() as session:
        session.get(Ticket, seeded.ticket_id).chosen_epoch = 2
    view = release_view(rt.factory, seeded.ticket_id)
    assert view.dora and view.compat_key == compat_filename(view.lora_key)
    assert rt.storage.exists(view.compat_key)
