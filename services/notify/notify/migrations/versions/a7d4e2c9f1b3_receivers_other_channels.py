"""receivers' other channels: channel_delivery (webhook, SMS, WhatsApp, operators' alerts)

Revision ID: a7d4e2c9f1b3
Revises: f5d28a61c3b9
Create Date: 2026-12-02 02:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'a7d4e2c9f1b3'
down_revision: str | Sequence[str] | None = 'f5d28a61c3b9'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'channel_delivery',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('referral_id', sa.String(length=32), nullable=False),
        sa.Column('decision_id', sa.String(length=32), nullable=False),
        sa.Column('receiver_id', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('address', sa.String(length=2000), nullable=False),
        sa.Column('urgent', sa.Boolean(), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_delivery')),
        sa.UniqueConstraint('decision_id', 'receiver_id', 'kind', 'channel',
                            name='uq_channel_delivery_decision_receiver_kind_channel'),
    )
    with op.batch_alter_table('channel_delivery', schema=None) as batch_op:
        batch_op.create_index('ix_channel_delivery_state_next', ['state', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_channel_delivery_referral_id'), ['referral_id'], unique=False)


def downgrade() -> None:
    op.drop_table('channel_delivery')
