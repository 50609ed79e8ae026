"""drop folders

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 16:20:00

Folders an instrument writes into, and what became of each entry the poller found in them.
"""

from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'drop_folders',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('path', sa.String(length=1024), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=True),
        sa.Column('stable_seconds', sa.Float(), nullable=False),
        sa.Column('action', sa.Enum('move', 'keep', name='drop_action', native_enum=False, length=16), nullable=False),
        sa.Column('extra_subject', sa.String(length=128), nullable=True),
        sa.Column('extra_study', sa.String(length=128), server_default='', nullable=False),
        sa.Column('problem', sa.Text(), server_default='', nullable=False),
        sa.Column('problem_since', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_drop_folders_project_id_projects'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_drop_folders')),
        sa.UniqueConstraint('name', name=op.f('uq_drop_folders_name')),
    )
    with op.batch_alter_table('drop_folders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_drop_folders_project_id'), ['project_id'], unique=False)
    op.create_table(
        'drop_entries',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('folder_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=1024), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('mtime', sa.Float(), nullable=False),
        sa.Column('files', sa.Integer(), nullable=False),
        sa.Column('state', sa.Enum('importing', 'done', 'failed', name='drop_state', native_enum=False, length=16), nullable=False),
        sa.Column('message', sa.Text(), server_default='', nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['folder_id'], ['drop_folders.id'], name=op.f('fk_drop_entries_folder_id_drop_folders'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_drop_entries')),
        sa.UniqueConstraint('folder_id', 'name', name=op.f('uq_drop_entries_folder_id')),
    )


def downgrade() -> None:
    op.drop_table('drop_entries')
    with op.batch_alter_table('drop_folders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_drop_folders_project_id'))
    op.drop_table('drop_folders')
