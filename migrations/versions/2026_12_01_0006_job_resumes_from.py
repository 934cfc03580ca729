"""a retried job resumes from the job it retries

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "resumes_job_id",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                nullable=True,
            )
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_training_jobs_resumes_job_id_training_jobs"),
            "training_jobs",
            ["resumes_job_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("training_jobs", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_training_jobs_resumes_job_id_training_jobs"), type_="foreignkey"
        )
        batch_op.drop_column("resumes_job_id")
