"""conversion leases

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03 06:50:00

A running conversion request's lease, renewed by its worker while it converts, so that a
request whose worker was killed is claimed again by another; and an index of the pending and
running requests only, by which workers find the oldest claimable one.
"""

from alembic import op
import sqlalchemy as sa


revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

ACTIVE = sa.text("state IN ('pending', 'running')")


def upgrade() -> None:
    with op.batch_alter_table('conversion_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_conversion_requests_active', ['id'], unique=False, sqlite_where=ACTIVE, postgresql_where=ACTIVE)


def downgrade() -> None:
    with op.batch_alter_table('conversion_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_conversion_requests_active', sqlite_where=ACTIVE, postgresql_where=ACTIVE)
        batch_op.drop_column('lease_until')
