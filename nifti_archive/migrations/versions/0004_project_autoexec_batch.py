"""project autoexec batch and default queue

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 23:21:00

The saved batch a project runs on a study (`nora --launch_autoexec`, and after conversions),
and the queue its runs go to where a batch names none.
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('projects', sa.Column('autoexec_batch', sa.String(length=128), nullable=True))
    op.add_column('projects', sa.Column('default_queue', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('default_queue')
        batch_op.drop_column('autoexec_batch')
