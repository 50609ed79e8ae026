"""project BIDS rules

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 15:50:00

How a project's series map to BIDS names in an export (JSON; none: the built-in defaults).
"""

from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('projects', sa.Column('bids_rules', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('bids_rules')
