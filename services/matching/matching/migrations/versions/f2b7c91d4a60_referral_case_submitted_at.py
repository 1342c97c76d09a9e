"""referral case: when the referral was submitted (its event's time), carried on proposals

Revision ID: f2b7c91d4a60
Revises: d7f3a1c0e911
Create Date: 2026-12-02 11:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'f2b7c91d4a60'
down_revision: str | None = 'd7f3a1c0e911'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('referral_case', schema=None) as batch_op:
        batch_op.add_column(sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('referral_case', schema=None) as batch_op:
        batch_op.drop_column('submitted_at')
