"""conversion queue routing and naming

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 22:09:35.272921

The durable conversion queue, routing rules, import/pull overrides and per-project naming templates.
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('conversion_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('orthanc_series_id', sa.String(length=64), nullable=False),
    sa.Column('instances_hash', sa.String(length=64), nullable=False),
    sa.Column('instance_count', sa.Integer(), nullable=False),
    sa.Column('series_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('state', sa.Enum('pending', 'running', 'done', 'failed', 'quarantined', 'superseded', name='conversion_state', native_enum=False, length=16), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=True),
    sa.Column('target', sa.String(length=1024), nullable=False),
    sa.Column('worker', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_conversion_requests_project_id_projects'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conversion_requests')),
    sa.UniqueConstraint('orthanc_series_id', 'instances_hash', name=op.f('uq_conversion_requests_orthanc_series_id'))
    )
    with op.batch_alter_table('conversion_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_conversion_requests_orthanc_series_id'), ['orthanc_series_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_conversion_requests_series_instance_uid'), ['series_instance_uid'], unique=False)
        batch_op.create_index(batch_op.f('ix_conversion_requests_state'), ['state'], unique=False)

    op.create_table('ingest_overrides',
    sa.Column('series_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.String(length=128), nullable=True),
    sa.Column('study_id', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_ingest_overrides_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('series_instance_uid', name=op.f('pk_ingest_overrides'))
    )
    op.create_table('routing_rules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('called_aet', sa.String(length=16), nullable=True),
    sa.Column('tag', sa.String(length=64), nullable=True),
    sa.Column('pattern', sa.String(length=512), nullable=True),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_routing_rules_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_routing_rules'))
    )
    with op.batch_alter_table('routing_rules', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_routing_rules_project_id'), ['project_id'], unique=False)

    # Plain ADD COLUMN, never a table copy: on SQLite, copying `projects` would cascade deletes.
    op.add_column('projects', sa.Column('subject_template', sa.String(length=256), server_default='{PatientID}', nullable=False))
    op.add_column('projects', sa.Column('study_template', sa.String(length=256), server_default='{StudyDate}_{AccessionNumber}', nullable=False))
    op.add_column('projects', sa.Column('series_template', sa.String(length=256), server_default='{SeriesNumber:03d}_{SeriesDescription}', nullable=False))



def downgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('series_template')
        batch_op.drop_column('study_template')
        batch_op.drop_column('subject_template')

    with op.batch_alter_table('routing_rules', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_routing_rules_project_id'))

    op.drop_table('routing_rules')
    op.drop_table('ingest_overrides')
    with op.batch_alter_table('conversion_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_conversion_requests_state'))
        batch_op.drop_index(batch_op.f('ix_conversion_requests_series_instance_uid'))
        batch_op.drop_index(batch_op.f('ix_conversion_requests_orthanc_series_id'))

    op.drop_table('conversion_requests')
