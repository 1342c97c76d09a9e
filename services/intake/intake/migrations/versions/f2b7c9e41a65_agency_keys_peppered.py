"""agency keys kept as HMAC-SHA256(AGENCY_KEY_PEPPER, key); issued and revoked times

A stored SHA-256 of a key cannot be turned into its HMAC without the key, which the
service never kept: every existing agency is deactivated, its key no longer works, and
`rujukan agencies rotate <id>` (or POST /v1/agencies/<id>/keys/rotate) issues it a new
one. The demo agency is made again at the next start in development (DEMO_API_KEY).

Revision ID: f2b7c9e41a65
Revises: a7d1e0c3b9f2
Create Date: 2026-11-25 10:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'f2b7c9e41a65'
down_revision: str | None = 'a7d1e0c3b9f2'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A rename keeps the unique constraint and, on SQLite, avoids recreating a table that
    # referrals point at.
    op.execute('ALTER TABLE agency RENAME COLUMN api_key_sha256 TO key_hmac')
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE agency RENAME CONSTRAINT uq_agency_api_key_sha256 TO uq_agency_key_hmac')
        op.execute('ALTER TABLE agency ALTER COLUMN key_hmac TYPE VARCHAR(80)')
    op.add_column('agency', sa.Column('key_hint', sa.String(length=16), nullable=True))
    op.add_column('agency', sa.Column('key_issued_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('agency', sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True))
    # "none:<id>" is unique and equals no HMAC (64 hex digits): no key opens these agencies.
    op.execute(sa.text("UPDATE agency SET key_hmac = 'none:' || id, active = :off").bindparams(off=False))


def downgrade() -> None:
    op.drop_column('agency', 'revoked_at')
    op.drop_column('agency', 'key_issued_at')
    op.drop_column('agency', 'key_hint')
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE agency RENAME CONSTRAINT uq_agency_key_hmac TO uq_agency_api_key_sha256')
    op.execute('ALTER TABLE agency RENAME COLUMN key_hmac TO api_key_sha256')
