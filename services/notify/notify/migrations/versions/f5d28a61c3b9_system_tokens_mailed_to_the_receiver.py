"""system tokens mailed to the receiver: receiver.email; receiver_token.token_sha256 nullable

An operator's token for a system is no longer shown to the operator: it is minted when
its mail to the receiver's professional address goes out, so a token row exists (with the
id the operator was told) before it has a hash. Receivers learnt before this revision have
no address until their next registration or proposal.

Revision ID: f5d28a61c3b9
Revises: c41f0e9b7a25, e93b5d7a2c18
Create Date: 2026-12-03 10:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'f5d28a61c3b9'
down_revision: str | Sequence[str] | None = ('c41f0e9b7a25', 'e93b5d7a2c18')
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('receiver', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email', sa.String(length=320), server_default='', nullable=False))
    with op.batch_alter_table('receiver_token', schema=None) as batch_op:
        batch_op.alter_column('token_sha256', existing_type=sa.String(length=64), nullable=True)


def downgrade() -> None:
    # A token whose mail never went out opens nothing: it goes with the column's constraint.
    op.execute("DELETE FROM receiver_token WHERE token_sha256 IS NULL")
    with op.batch_alter_table('receiver_token', schema=None) as batch_op:
        batch_op.alter_column('token_sha256', existing_type=sa.String(length=64), nullable=False)
    with op.batch_alter_table('receiver', schema=None) as batch_op:
        batch_op.drop_column('email')
