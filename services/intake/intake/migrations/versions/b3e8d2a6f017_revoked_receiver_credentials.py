"""revoked receiver credentials: grants obtained with them are refused

Revision ID: b3e8d2a6f017
Revises: d81bd5576f4e
Create Date: 2026-12-01 10:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'b3e8d2a6f017'
down_revision: str | None = 'd81bd5576f4e'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('revoked_credential',
    sa.Column('credential_id', sa.String(length=32), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('credential_id', name=op.f('pk_revoked_credential'))
    )


def downgrade() -> None:
    op.drop_table('revoked_credential')
