"""initial archive schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 21:40:56.991830

Besides the tables, the indexes that keep file patterns and filter bars fast at 100,000
files: a plain index serves prefix patterns (SQLite with case_sensitive_like, PostgreSQL with
text_pattern_ops); on PostgreSQL, trigram indexes serve infix patterns (`*flair*`) and
case-insensitive searches in descriptions and names.
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('projects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('pseudonymise', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_projects')),
    sa.UniqueConstraint('name', name=op.f('uq_projects_name'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=False),
    sa.Column('is_site_admin', sa.Boolean(), nullable=False),
    sa.Column('must_change_password', sa.Boolean(), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_user_id'), ['user_id'], unique=False)

    op.create_table('project_roles',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.Enum('viewer', 'reader', 'editor', 'admin', name='role', native_enum=False, length=16), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_project_roles_project_id_projects'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_project_roles_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'project_id', name=op.f('pk_project_roles'))
    )
    op.create_table('trash',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('deleted_by', sa.String(length=128), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_trash_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trash')),
    sqlite_autoincrement=True,
    )
    with op.batch_alter_table('trash', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trash_project_id'), ['project_id'], unique=False)

    op.create_table('subjects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('trash_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_subjects_project_id_projects'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['trash_id'], ['trash.id'], name=op.f('fk_subjects_trash_id_trash')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subjects'))
    )
    with op.batch_alter_table('subjects', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subjects_trash_id'), ['trash_id'], unique=False)
        batch_op.create_index('uq_subjects_live_patient_id', ['project_id', 'patient_id'], unique=True, sqlite_where=sa.text('trash_id IS NULL'), postgresql_where=sa.text('trash_id IS NULL'))

    op.create_table('studies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.String(length=128), nullable=False),
    sa.Column('study_date', sa.Date(), nullable=True),
    sa.Column('description', sa.String(length=256), nullable=False),
    sa.Column('accession_number', sa.String(length=64), nullable=False),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('trash_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['subject_id'], ['subjects.id'], name=op.f('fk_studies_subject_id_subjects'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['trash_id'], ['trash.id'], name=op.f('fk_studies_trash_id_trash')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_studies'))
    )
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_studies_study_instance_uid'), ['study_instance_uid'], unique=False)
        batch_op.create_index(batch_op.f('ix_studies_subject_id'), ['subject_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_studies_trash_id'), ['trash_id'], unique=False)
        batch_op.create_index('uq_studies_live_study_id', ['subject_id', 'study_id'], unique=True, sqlite_where=sa.text('trash_id IS NULL'), postgresql_where=sa.text('trash_id IS NULL'))

    op.create_table('subject_identities',
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('patient_name', sa.String(length=256), nullable=False),
    sa.Column('real_patient_id', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['subject_id'], ['subjects.id'], name=op.f('fk_subject_identities_subject_id_subjects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('subject_id', name=op.f('pk_subject_identities'))
    )
    op.create_table('subject_tags',
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('tag', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['subject_id'], ['subjects.id'], name=op.f('fk_subject_tags_subject_id_subjects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('subject_id', 'tag', name=op.f('pk_subject_tags'))
    )
    with op.batch_alter_table('subject_tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subject_tags_tag'), ['tag'], unique=False)

    op.create_table('files',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('trash_id', sa.Integer(), nullable=True),
    sa.Column('source_series_uid', sa.String(length=64), nullable=True),
    sa.Column('orthanc_series_id', sa.String(length=64), nullable=True),
    sa.Column('instance_count', sa.Integer(), nullable=True),
    sa.Column('converter', sa.String(length=64), nullable=True),
    sa.Column('converter_version', sa.String(length=64), nullable=True),
    sa.Column('converter_flags', sa.Text(), nullable=True),
    sa.Column('derived_from_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['derived_from_id'], ['files.id'], name=op.f('fk_files_derived_from_id_files'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_files_study_id_studies'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['trash_id'], ['trash.id'], name=op.f('fk_files_trash_id_trash')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_files'))
    )
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_files_trash_id'), ['trash_id'], unique=False)
        batch_op.create_index('uq_files_live_path', ['study_id', 'path'], unique=True, sqlite_where=sa.text('trash_id IS NULL'), postgresql_where=sa.text('trash_id IS NULL'))

    op.create_table('job_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=True),
    sa.Column('state', sa.Enum('queued', 'running', 'error', 'done', 'cancelled', name='job_state', native_enum=False, length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_job_runs_project_id_projects'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_job_runs_study_id_studies'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subject_id'], ['subjects.id'], name=op.f('fk_job_runs_subject_id_subjects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_runs'))
    )
    with op.batch_alter_table('job_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_runs_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_job_runs_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_job_runs_study_id'), ['study_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_job_runs_subject_id'), ['subject_id'], unique=False)

    op.create_table('study_tags',
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('tag', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_study_tags_study_id_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('study_id', 'tag', name=op.f('pk_study_tags'))
    )
    with op.batch_alter_table('study_tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_study_tags_tag'), ['tag'], unique=False)

    op.create_table('file_tags',
    sa.Column('file_id', sa.Integer(), nullable=False),
    sa.Column('tag', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['file_id'], ['files.id'], name=op.f('fk_file_tags_file_id_files'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('file_id', 'tag', name=op.f('pk_file_tags'))
    )
    with op.batch_alter_table('file_tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_file_tags_tag'), ['tag'], unique=False)

    _create_search_indexes()


def _create_search_indexes() -> None:
    # Partial (live rows only) and covering (study and file ids included), so that a pattern
    # that matches a tenth of the archive is answered from the index without touching the table.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(
            "CREATE INDEX ix_files_path_prefix ON files (path text_pattern_ops) INCLUDE (study_id, id) "
            "WHERE trash_id IS NULL"
        )
        op.execute("CREATE INDEX ix_files_path_trgm ON files USING gin (path gin_trgm_ops) WHERE trash_id IS NULL")
        op.execute("CREATE INDEX ix_studies_description_trgm ON studies USING gin (description gin_trgm_ops)")
        op.execute("CREATE INDEX ix_subjects_patient_id_trgm ON subjects USING gin (patient_id gin_trgm_ops)")
    else:
        op.execute("CREATE INDEX ix_files_path_prefix ON files (path, study_id, id) WHERE trash_id IS NULL")


def downgrade() -> None:
    for index in ("ix_files_path_prefix", "ix_files_path_trgm", "ix_studies_description_trgm", "ix_subjects_patient_id_trgm"):
        op.execute(f"DROP INDEX IF EXISTS {index}")
    with op.batch_alter_table('file_tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_file_tags_tag'))

    op.drop_table('file_tags')
    with op.batch_alter_table('study_tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_study_tags_tag'))

    op.drop_table('study_tags')
    with op.batch_alter_table('job_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_runs_subject_id'))
        batch_op.drop_index(batch_op.f('ix_job_runs_study_id'))
        batch_op.drop_index(batch_op.f('ix_job_runs_state'))
        batch_op.drop_index(batch_op.f('ix_job_runs_project_id'))

    op.drop_table('job_runs')
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index('uq_files_live_path', sqlite_where=sa.text('trash_id IS NULL'), postgresql_where=sa.text('trash_id IS NULL'))
        batch_op.drop_index(batch_op.f('ix_files_trash_id'))

    op.drop_table('files')
    with op.batch_alter_table('subject_tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_subject_tags_tag'))

    op.drop_table('subject_tags')
    op.drop_table('subject_identities')
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_index('uq_studies_live_study_id', sqlite_where=sa.text('trash_id IS NULL'), postgresql_where=sa.text('trash_id IS NULL'))
        batch_op.drop_index(batch_op.f('ix_studies_trash_id'))
        batch_op.drop_index(batch_op.f('ix_studies_subject_id'))
        batch_op.drop_index(batch_op.f('ix_studies_study_instance_uid'))

    op.drop_table('studies')
    with op.batch_alter_table('subjects', schema=None) as batch_op:
        batch_op.drop_index('uq_subjects_live_patient_id', sqlite_where=sa.text('trash_id IS NULL'), postgresql_where=sa.text('trash_id IS NULL'))
        batch_op.drop_index(batch_op.f('ix_subjects_trash_id'))

    op.drop_table('subjects')
    with op.batch_alter_table('trash', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_trash_project_id'))

    op.drop_table('trash')
    op.drop_table('project_roles')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_user_id'))

    op.drop_table('api_tokens')
    op.drop_table('users')
    op.drop_table('projects')
