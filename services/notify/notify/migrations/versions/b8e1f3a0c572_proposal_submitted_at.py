"""proposal: when its referral was submitted (from referral.matched), for the time to notification

Revision ID: b8e1f3a0c572
Revises: a7d4e2c9f1b3
Create Date: 2026-12-02 11:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'b8e1f3a0c572'
down_revision: str | None = 'a7d4e2c9f1b3'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('proposal', schema=None) as batch_op:
        batch_op.add_column(sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('proposal', schema=None) as batch_op:
        batch_op.drop_column('submitted_at')
