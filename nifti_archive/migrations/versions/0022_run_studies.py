"""run studies

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03 10:50:00

The studies a project-level run covers (a training over the selection): one run, many studies.
"""

from alembic import op
import sqlalchemy as sa


revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('run_studies',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['job_runs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'study_id')
    )
    with op.batch_alter_table('run_studies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_run_studies_study_id'), ['study_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('run_studies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_run_studies_study_id'))
    op.drop_table('run_studies')
