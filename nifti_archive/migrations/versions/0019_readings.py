"""readings

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03 06:40:00

Reader studies: versioned forms, readings with their stages and readers, the cases a reading
chose when it started, and each reader's answers.
"""

from alembic import op
import sqlalchemy as sa


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=16)


def upgrade() -> None:
    op.create_table(
        'reading_forms',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_reading_forms_project_id_projects'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_reading_forms')),
        sa.UniqueConstraint('project_id', 'name', name=op.f('uq_reading_forms_project_id')),
    )
    op.create_table(
        'reading_form_versions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('form_id', sa.Integer(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('document', sa.Text(), nullable=False),
        sa.Column('saved_by', sa.String(length=128), nullable=False),
        sa.Column('saved_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['form_id'], ['reading_forms.id'], name=op.f('fk_reading_form_versions_form_id_reading_forms'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_reading_form_versions')),
        sa.UniqueConstraint('form_id', 'version', name=op.f('uq_reading_form_versions_form_id')),
    )
    op.create_table(
        'readings',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('form_id', sa.Integer(), nullable=False),
        sa.Column('state', _enum('reading_state', 'draft', 'open', 'closed'), nullable=False),
        sa.Column('mode', _enum('reading_mode', 'individual', 'joint'), nullable=False),
        sa.Column('case_order', _enum('case_order', 'none', 'full', 'idhash'), nullable=False),
        sa.Column('repetitions', sa.Integer(), nullable=False),
        sa.Column('cases_filter', sa.Text(), nullable=False),
        sa.Column('training_filter', sa.Text(), nullable=True),
        sa.Column('preset', sa.String(length=64), nullable=True),
        sa.Column('blind_identity', sa.Boolean(), nullable=False),
        sa.Column('blind_dates', sa.Boolean(), nullable=False),
        sa.Column('blind_description', sa.Boolean(), nullable=False),
        sa.Column('blind_other_readers', sa.Boolean(), nullable=False),
        sa.Column('blind_own_earlier', sa.Boolean(), nullable=False),
        sa.Column('instructions', sa.Text(), nullable=False),
        sa.Column('instructions_url', sa.String(length=2000), nullable=False),
        sa.Column('allow_restart_training', sa.Boolean(), nullable=False),
        sa.Column('allow_restart_serious', sa.Boolean(), nullable=False),
        sa.Column('created_by', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['form_id'], ['reading_forms.id'], name=op.f('fk_readings_form_id_reading_forms')),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_readings_project_id_projects'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_readings')),
        sa.UniqueConstraint('project_id', 'name', name=op.f('uq_readings_project_id')),
    )
    with op.batch_alter_table('readings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_readings_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_readings_form_id'), ['form_id'], unique=False)
    op.create_table(
        'reading_stages',
        sa.Column('reading_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('overlay', sa.String(length=512), nullable=True),
        sa.ForeignKeyConstraint(['reading_id'], ['readings.id'], name=op.f('fk_reading_stages_reading_id_readings'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('reading_id', 'position', name=op.f('pk_reading_stages')),
    )
    op.create_table(
        'reading_readers',
        sa.Column('reading_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('training_seed', sa.String(length=32), nullable=False),
        sa.Column('serious_seed', sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(['reading_id'], ['readings.id'], name=op.f('fk_reading_readers_reading_id_readings'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_reading_readers_user_id_users'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('reading_id', 'user_id', name=op.f('pk_reading_readers')),
    )
    with op.batch_alter_table('reading_readers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reading_readers_user_id'), ['user_id'], unique=False)
    op.create_table(
        'reading_cases',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('reading_id', sa.Integer(), nullable=False),
        sa.Column('phase', _enum('reading_phase', 'training', 'serious'), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['reading_id'], ['readings.id'], name=op.f('fk_reading_cases_reading_id_readings'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_reading_cases_study_id_studies'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_reading_cases')),
        sa.UniqueConstraint('reading_id', 'phase', 'study_id', name=op.f('uq_reading_cases_reading_id')),
    )
    with op.batch_alter_table('reading_cases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reading_cases_study_id'), ['study_id'], unique=False)
    op.create_table(
        'reading_results',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('case_id', sa.Integer(), nullable=False),
        sa.Column('reader_id', sa.Integer(), nullable=True),
        sa.Column('stage', sa.Integer(), nullable=False),
        sa.Column('repetition', sa.Integer(), nullable=False),
        sa.Column('form_version_id', sa.Integer(), nullable=False),
        sa.Column('answers', sa.Text(), nullable=False),
        sa.Column('active_ms', sa.BigInteger(), nullable=False),
        sa.Column('completed', sa.Boolean(), nullable=False),
        sa.Column('saved_by', sa.String(length=128), nullable=False),
        sa.Column('saved_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['case_id'], ['reading_cases.id'], name=op.f('fk_reading_results_case_id_reading_cases'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['form_version_id'], ['reading_form_versions.id'], name=op.f('fk_reading_results_form_version_id_reading_form_versions')),
        sa.ForeignKeyConstraint(['reader_id'], ['users.id'], name=op.f('fk_reading_results_reader_id_users'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_reading_results')),
    )
    with op.batch_alter_table('reading_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reading_results_reader_id'), ['reader_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_reading_results_form_version_id'), ['form_version_id'], unique=False)
        batch_op.create_index('uq_reading_results_individual', ['case_id', 'reader_id', 'stage', 'repetition'], unique=True,
                              sqlite_where=sa.text('reader_id IS NOT NULL'), postgresql_where=sa.text('reader_id IS NOT NULL'))
        batch_op.create_index('uq_reading_results_joint', ['case_id', 'stage', 'repetition'], unique=True,
                              sqlite_where=sa.text('reader_id IS NULL'), postgresql_where=sa.text('reader_id IS NULL'))


def downgrade() -> None:
    op.drop_table('reading_results')
    op.drop_table('reading_cases')
    op.drop_table('reading_readers')
    op.drop_table('reading_stages')
    op.drop_table('readings')
    op.drop_table('reading_form_versions')
    op.drop_table('reading_forms')
