"""referral: the agency's caseworker (sealed), the receiving service's handover contact once
accepted, and every proposal by decision id (escalation keeps two open at once)

Revision ID: a3c5e7f9b1i11
Revises: e6a4c2f8b0w11
Create Date: 2026-12-02 02:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'a3c5e7f9b1i11'
down_revision: str | None = 'e6a4c2f8b0w11'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.add_column(sa.Column('proposals', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('caseworker_enc', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('handover', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.drop_column('handover')
        batch_op.drop_column('caseworker_enc')
        batch_op.drop_column('proposals')
