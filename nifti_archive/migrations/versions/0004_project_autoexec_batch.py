"""project autoexec batch

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 23:21:00

The saved batch a project runs on a study with `nora --launch_autoexec`.
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('projects', sa.Column('autoexec_batch', sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('autoexec_batch')
