"""rois and markers

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 08:27:02

ROIs (one author's version of a labelled mask, with its reference image and DICOM SEG), marker
sets and their points, and the series a waiting conversion request needs first.
"""

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('marker_sets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('author', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('modified_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('trash_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_marker_sets_study_id_studies'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['trash_id'], ['trash.id'], name=op.f('fk_marker_sets_trash_id_trash')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_marker_sets'))
    )
    with op.batch_alter_table('marker_sets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_marker_sets_study_id'), ['study_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_marker_sets_trash_id'), ['trash_id'], unique=False)
        batch_op.create_index('uq_marker_sets_live_name', ['study_id', 'name'], unique=True, sqlite_where=sa.text('trash_id IS NULL'), postgresql_where=sa.text('trash_id IS NULL'))

    op.create_table('marker_points',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('marker_set_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('x', sa.Float(), nullable=False),
    sa.Column('y', sa.Float(), nullable=False),
    sa.Column('z', sa.Float(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['marker_set_id'], ['marker_sets.id'], name=op.f('fk_marker_points_marker_set_id_marker_sets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_marker_points'))
    )
    with op.batch_alter_table('marker_points', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_marker_points_marker_set_id'), ['marker_set_id'], unique=False)

    op.create_table('rois',
    sa.Column('file_id', sa.Integer(), nullable=False),
    sa.Column('reference_file_id', sa.Integer(), nullable=True),
    sa.Column('label', sa.String(length=64), nullable=False),
    sa.Column('colour', sa.String(length=7), nullable=False),
    sa.Column('author', sa.String(length=128), nullable=False),
    sa.Column('origin', sa.Enum('drawn', 'dicom-seg', 'operation', 'consensus', 'algorithm', name='roi_origin', native_enum=False, length=16), nullable=False),
    sa.Column('algorithm', sa.String(length=64), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('seg_series_uid', sa.String(length=64), nullable=True),
    sa.Column('seg_instance_uid', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('modified_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['file_id'], ['files.id'], name=op.f('fk_rois_file_id_files'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['reference_file_id'], ['files.id'], name=op.f('fk_rois_reference_file_id_files'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('file_id', name=op.f('pk_rois'))
    )
    with op.batch_alter_table('rois', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rois_label'), ['label'], unique=False)
        batch_op.create_index(batch_op.f('ix_rois_reference_file_id'), ['reference_file_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rois_seg_instance_uid'), ['seg_instance_uid'], unique=False)
        batch_op.create_index(batch_op.f('ix_rois_seg_series_uid'), ['seg_series_uid'], unique=False)

    with op.batch_alter_table('conversion_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('waiting_for', sa.String(length=64), server_default='', nullable=False))
        batch_op.create_index(batch_op.f('ix_conversion_requests_waiting_for'), ['waiting_for'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('conversion_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_conversion_requests_waiting_for'))
        batch_op.drop_column('waiting_for')

    with op.batch_alter_table('rois', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rois_seg_series_uid'))
        batch_op.drop_index(batch_op.f('ix_rois_seg_instance_uid'))
        batch_op.drop_index(batch_op.f('ix_rois_reference_file_id'))
        batch_op.drop_index(batch_op.f('ix_rois_label'))

    op.drop_table('rois')
    with op.batch_alter_table('marker_points', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_marker_points_marker_set_id'))

    op.drop_table('marker_points')
    with op.batch_alter_table('marker_sets', schema=None) as batch_op:
        batch_op.drop_index('uq_marker_sets_live_name', sqlite_where=sa.text('trash_id IS NULL'), postgresql_where=sa.text('trash_id IS NULL'))
        batch_op.drop_index(batch_op.f('ix_marker_sets_trash_id'))
        batch_op.drop_index(batch_op.f('ix_marker_sets_study_id'))

    op.drop_table('marker_sets')
