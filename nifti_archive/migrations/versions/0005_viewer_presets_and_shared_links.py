"""viewer presets and shared links

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 01:00:00

The portal viewer's per-project autoloader presets and its saved, shareable viewer states.
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'viewer_presets',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('spec', sa.Text(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_viewer_presets_project_id_projects'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_viewer_presets')),
        sa.UniqueConstraint('project_id', 'name', name=op.f('uq_viewer_presets_project_id')),
    )
    op.create_table(
        'shared_links',
        sa.Column('key', sa.String(length=32), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.Integer(), nullable=True),
        sa.Column('state', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_shared_links_created_by_users'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_shared_links_project_id_projects'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_shared_links')),
    )
    op.create_index(op.f('ix_shared_links_project_id'), 'shared_links', ['project_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_shared_links_project_id'), table_name='shared_links')
    op.drop_table('shared_links')
    op.drop_table('viewer_presets')
