"""receivers by the identity matching issues; sign-in codes, sessions, system tokens

The inbox, deliveries and responses were keyed by an HSDS contact id, which another
directory record could reuse: they are keyed by the receiver id from now on (rows written
before keep the contact id they had, which no receiver id equals, so they open nothing new).
The inbox-wide tokens that proposal mails carried are dropped, not migrated: every one of
them is revoked by this upgrade.

Revision ID: c41f0e9b7a25
Revises: b6c3c64149b6
Create Date: 2026-12-01 10:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'c41f0e9b7a25'
down_revision: str | None = 'b6c3c64149b6'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.drop_constraint('uq_delivery_decision_recipient_kind', type_='unique')
        batch_op.alter_column('recipient_contact_id', new_column_name='receiver_id',
                              existing_type=sa.String(length=64), existing_nullable=False)
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_delivery_decision_receiver_kind', ['decision_id', 'receiver_id', 'kind'])

    with op.batch_alter_table('proposal', schema=None) as batch_op:
        batch_op.drop_index('ix_proposal_contact_created')
        batch_op.alter_column('contact_id', new_column_name='receiver_id',
                              existing_type=sa.String(length=64), existing_nullable=False)
    with op.batch_alter_table('proposal', schema=None) as batch_op:
        batch_op.create_index('ix_proposal_receiver_created', ['receiver_id', 'created_at'], unique=False)

    with op.batch_alter_table('response', schema=None) as batch_op:
        batch_op.alter_column('contact_id', new_column_name='receiver_id',
                              existing_type=sa.String(length=64), existing_nullable=False)
        batch_op.alter_column('token_id', new_column_name='credential_id',
                              existing_type=sa.String(length=32), existing_nullable=False)

    with op.batch_alter_table('recipient_token', schema=None) as batch_op:
        batch_op.drop_index('ix_recipient_token_contact_id')
    op.drop_table('recipient_token')

    op.create_table('receiver',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('service_id', sa.String(length=64), nullable=False),
    sa.Column('organization_id', sa.String(length=64), nullable=False),
    sa.Column('contact_id', sa.String(length=64), nullable=False),
    sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_receiver'))
    )
    op.create_table('signin_code',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('code_sha256', sa.String(length=64), nullable=False),
    sa.Column('receiver_id', sa.String(length=32), nullable=False),
    sa.Column('decision_id', sa.String(length=32), nullable=False),
    sa.Column('delivery_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('renewed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signin_code')),
    sa.UniqueConstraint('code_sha256', name=op.f('uq_signin_code_code_sha256'))
    )
    with op.batch_alter_table('signin_code', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signin_code_delivery_id'), ['delivery_id'], unique=False)

    op.create_table('receiver_session',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('session_sha256', sa.String(length=64), nullable=False),
    sa.Column('receiver_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_receiver_session')),
    sa.UniqueConstraint('session_sha256', name=op.f('uq_receiver_session_session_sha256'))
    )
    with op.batch_alter_table('receiver_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_receiver_session_receiver_id'), ['receiver_id'], unique=False)

    op.create_table('session_proposal',
    sa.Column('session_id', sa.String(length=32), nullable=False),
    sa.Column('decision_id', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['receiver_session.id'],
                            name=op.f('fk_session_proposal_session_id_receiver_session'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('session_id', 'decision_id', name=op.f('pk_session_proposal'))
    )
    op.create_table('receiver_token',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('receiver_id', sa.String(length=32), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('issued_by', sa.String(length=120), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_receiver_token')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_receiver_token_token_sha256'))
    )
    with op.batch_alter_table('receiver_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_receiver_token_receiver_id'), ['receiver_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('receiver_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_receiver_token_receiver_id'))
    op.drop_table('receiver_token')
    op.drop_table('session_proposal')
    with op.batch_alter_table('receiver_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_receiver_session_receiver_id'))
    op.drop_table('receiver_session')
    with op.batch_alter_table('signin_code', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signin_code_delivery_id'))
    op.drop_table('signin_code')
    op.drop_table('receiver')

    op.create_table('recipient_token',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('contact_id', sa.String(length=64), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recipient_token')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_recipient_token_token_sha256'))
    )
    with op.batch_alter_table('recipient_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recipient_token_contact_id'), ['contact_id'], unique=False)

    with op.batch_alter_table('response', schema=None) as batch_op:
        batch_op.alter_column('credential_id', new_column_name='token_id',
                              existing_type=sa.String(length=32), existing_nullable=False)
        batch_op.alter_column('receiver_id', new_column_name='contact_id',
                              existing_type=sa.String(length=64), existing_nullable=False)

    with op.batch_alter_table('proposal', schema=None) as batch_op:
        batch_op.drop_index('ix_proposal_receiver_created')
        batch_op.alter_column('receiver_id', new_column_name='contact_id',
                              existing_type=sa.String(length=64), existing_nullable=False)
    with op.batch_alter_table('proposal', schema=None) as batch_op:
        batch_op.create_index('ix_proposal_contact_created', ['contact_id', 'created_at'], unique=False)

    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.drop_constraint('uq_delivery_decision_receiver_kind', type_='unique')
        batch_op.alter_column('receiver_id', new_column_name='recipient_contact_id',
                              existing_type=sa.String(length=64), existing_nullable=False)
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_delivery_decision_recipient_kind',
                                          ['decision_id', 'recipient_contact_id', 'kind'])
