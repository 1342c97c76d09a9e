"""delivery: the traceparent of what queued it, so that its mail and outcome continue that trace

Revision ID: d3a9f6c1e870
Revises: b8e1f3a0c572
Create Date: 2026-12-02 11:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'd3a9f6c1e870'
down_revision: str | None = 'b8e1f3a0c572'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.add_column(sa.Column('traceparent', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.drop_column('traceparent')
