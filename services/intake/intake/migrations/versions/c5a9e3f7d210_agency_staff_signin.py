"""agency staff: registered addresses, single-use sign-in codes and sessions (kept hashed)

Revision ID: c5a9e3f7d210
Revises: f2b7c9e41a65
Create Date: 2026-12-02 02:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'c5a9e3f7d210'
down_revision: str | None = 'f2b7c9e41a65'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('agency_staff',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('agency_id', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['agency_id'], ['agency.id'], name=op.f('fk_agency_staff_agency_id_agency')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agency_staff')),
    sa.UniqueConstraint('email', name=op.f('uq_agency_staff_email'))
    )
    op.create_index(op.f('ix_agency_staff_agency_id'), 'agency_staff', ['agency_id'], unique=False)
    op.create_table('staff_signin_code',
    sa.Column('code_sha256', sa.String(length=64), nullable=False),
    sa.Column('staff_id', sa.String(length=32), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['staff_id'], ['agency_staff.id'], name=op.f('fk_staff_signin_code_staff_id_agency_staff'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('code_sha256', name=op.f('pk_staff_signin_code'))
    )
    op.create_index(op.f('ix_staff_signin_code_staff_id'), 'staff_signin_code', ['staff_id'], unique=False)
    op.create_table('staff_session',
    sa.Column('id_sha256', sa.String(length=64), nullable=False),
    sa.Column('staff_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['staff_id'], ['agency_staff.id'], name=op.f('fk_staff_session_staff_id_agency_staff'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id_sha256', name=op.f('pk_staff_session'))
    )
    op.create_index(op.f('ix_staff_session_staff_id'), 'staff_session', ['staff_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_staff_session_staff_id'), table_name='staff_session')
    op.drop_table('staff_session')
    op.drop_index(op.f('ix_staff_signin_code_staff_id'), table_name='staff_signin_code')
    op.drop_table('staff_signin_code')
    op.drop_index(op.f('ix_agency_staff_agency_id'), table_name='agency_staff')
    op.drop_table('agency_staff')
