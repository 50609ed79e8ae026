"""pull cohorts

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 02:00:00

Cohort pulls from a PACS: the cohort and one row per study, with its state, attempts and
next attempt (the durable pull queue).
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'pull_cohorts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('peer_id', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=1024), nullable=False),
        sa.Column('created_by', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['peer_id'], ['pacs_peers.id'], name=op.f('fk_pull_cohorts_peer_id_pacs_peers'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_pull_cohorts_project_id_projects'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_pull_cohorts')),
    )
    op.create_index(op.f('ix_pull_cohorts_project_id'), 'pull_cohorts', ['project_id'], unique=False)
    op.create_table(
        'pull_rows',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('cohort_id', sa.Integer(), nullable=False),
        sa.Column('line', sa.Integer(), nullable=False),
        sa.Column('accession_number', sa.String(length=64), nullable=False),
        sa.Column('patient_id', sa.String(length=64), nullable=False),
        sa.Column('study_date', sa.String(length=8), nullable=False),
        sa.Column('modality', sa.String(length=16), nullable=False),
        sa.Column('series_description', sa.String(length=128), nullable=False),
        sa.Column('state', sa.Enum('queued', 'running', 'done', 'failed', name='pull_state', native_enum=False, length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
        sa.Column('series_count', sa.Integer(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['cohort_id'], ['pull_cohorts.id'], name=op.f('fk_pull_rows_cohort_id_pull_cohorts'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_pull_rows')),
    )
    op.create_index(op.f('ix_pull_rows_cohort_id'), 'pull_rows', ['cohort_id'], unique=False)
    op.create_index('ix_pull_rows_state_next_attempt_at', 'pull_rows', ['state', 'next_attempt_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_pull_rows_state_next_attempt_at', table_name='pull_rows')
    op.drop_index(op.f('ix_pull_rows_cohort_id'), table_name='pull_rows')
    op.drop_table('pull_rows')
    op.drop_index(op.f('ix_pull_cohorts_project_id'), table_name='pull_cohorts')
    op.drop_table('pull_cohorts')
