"""nobody left behind: directory generation and changes, rematch and escalation on the case,
several open proposals per referral while a crisis escalates (one confirmed seat at most)

Revision ID: d7f3a1c0e911
Revises: b24f17ea183b
Create Date: 2026-12-02 02:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'd7f3a1c0e911'
down_revision: str | None = 'b24f17ea183b'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = sa.text("state IN ('held', 'confirmed')")
CONFIRMED = sa.text("state = 'confirmed'")


def upgrade() -> None:
    with op.batch_alter_table('directory_version', schema=None) as batch_op:
        batch_op.add_column(sa.Column('generation', sa.Integer(), server_default='0', nullable=False))
    op.create_table(
        'directory_change',
        sa.Column('generation', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('service_ids', sa.JSON(), nullable=False),
        sa.Column('done', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('generation', name=op.f('pk_directory_change')),
    )
    op.create_index('ix_directory_change_done', 'directory_change', ['done', 'generation'], unique=False)
    with op.batch_alter_table('referral_case', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rematch_generation', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('escalate_after', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('escalation_level', sa.Integer(), server_default='0', nullable=False))
        batch_op.create_index('ix_referral_case_escalate', ['state', 'escalate_after'], unique=False)
    with op.batch_alter_table('seat_hold', schema=None) as batch_op:
        batch_op.drop_index('uq_seat_hold_one_live_per_referral', sqlite_where=LIVE, postgresql_where=LIVE)
        batch_op.create_index('uq_seat_hold_one_confirmed_per_referral', ['referral_id'], unique=True,
                              sqlite_where=CONFIRMED, postgresql_where=CONFIRMED)


def downgrade() -> None:
    with op.batch_alter_table('seat_hold', schema=None) as batch_op:
        batch_op.drop_index('uq_seat_hold_one_confirmed_per_referral', sqlite_where=CONFIRMED,
                            postgresql_where=CONFIRMED)
        batch_op.create_index('uq_seat_hold_one_live_per_referral', ['referral_id'], unique=True,
                              sqlite_where=LIVE, postgresql_where=LIVE)
    with op.batch_alter_table('referral_case', schema=None) as batch_op:
        batch_op.drop_index('ix_referral_case_escalate')
        batch_op.drop_column('escalation_level')
        batch_op.drop_column('escalate_after')
        batch_op.drop_column('rematch_generation')
    op.drop_index('ix_directory_change_done', table_name='directory_change')
    op.drop_table('directory_change')
    with op.batch_alter_table('directory_version', schema=None) as batch_op:
        batch_op.drop_column('generation')
