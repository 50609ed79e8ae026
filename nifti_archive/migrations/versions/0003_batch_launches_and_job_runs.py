"""batch launches and job runs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 23:03:54.658368
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('batch_launches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('spec', sa.Text(), nullable=False),
    sa.Column('executor', sa.String(length=16), nullable=False),
    sa.Column('launched_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_batch_launches_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batch_launches'))
    )
    with op.batch_alter_table('batch_launches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_batch_launches_project_id'), ['project_id'], unique=False)

    op.create_table('saved_batches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('spec', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_saved_batches_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_saved_batches')),
    sa.UniqueConstraint('project_id', 'name', name=op.f('uq_saved_batches_project_id'))
    )
    # On SQLite this copies job_runs (to add the foreign key); no table references job_runs.
    with op.batch_alter_table('job_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('launch_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('executor_id', sa.String(length=64), server_default='', nullable=False))
        batch_op.add_column(sa.Column('log_path', sa.String(length=1024), server_default='', nullable=False))
        batch_op.add_column(sa.Column('message', sa.Text(), server_default='', nullable=False))
        batch_op.add_column(sa.Column('started_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('dismissed', sa.Boolean(), server_default=sa.text('false'), nullable=False))
        batch_op.create_index(batch_op.f('ix_job_runs_launch_id'), ['launch_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_job_runs_launch_id_batch_launches'), 'batch_launches', ['launch_id'], ['id'], ondelete='CASCADE')



def downgrade() -> None:
    with op.batch_alter_table('job_runs', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_job_runs_launch_id_batch_launches'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_job_runs_launch_id'))
        batch_op.drop_column('dismissed')
        batch_op.drop_column('finished_at')
        batch_op.drop_column('started_at')
        batch_op.drop_column('message')
        batch_op.drop_column('log_path')
        batch_op.drop_column('executor_id')
        batch_op.drop_column('launch_id')

    op.drop_table('saved_batches')
    with op.batch_alter_table('batch_launches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_batch_launches_project_id'))

    op.drop_table('batch_launches')
