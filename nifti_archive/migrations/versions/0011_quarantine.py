"""quarantine

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 05:28:23

Quarantined series a user can act on: the study and series folder a request was placed in,
and the note a released file keeps in its provenance.
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('conversion_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('study_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('series_folder', sa.String(length=256), server_default='', nullable=False))
        batch_op.create_index(batch_op.f('ix_conversion_requests_study_id'), ['study_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_conversion_requests_study_id_studies'), 'studies', ['study_id'], ['id'], ondelete='SET NULL')
    # A plain ADD COLUMN: a batch copy of `files` would lose its partial search indexes.
    op.add_column('files', sa.Column('provenance_note', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('files', 'provenance_note')
    with op.batch_alter_table('conversion_requests', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_conversion_requests_study_id_studies'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_conversion_requests_study_id'))
        batch_op.drop_column('series_folder')
        batch_op.drop_column('study_id')
