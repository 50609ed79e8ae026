"""segmentation models

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 12:13:36

A project's segmentation models (trained on its ROIs or registered from a user's TorchScript
file), one row per version with its state, metrics and training run, and the ROI versions each
trained model learnt from.
"""

from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('segmentation_models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('trained', 'registered', name='model_kind', native_enum=False, length=16), nullable=False),
    sa.Column('state', sa.Enum('training', 'ready', 'failed', name='model_state', native_enum=False, length=16), nullable=False),
    sa.Column('published', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('reason', sa.Text(), server_default='', nullable=False),
    sa.Column('path', sa.String(length=1024), server_default='', nullable=False),
    sa.Column('val_dice', sa.Float(), nullable=True),
    sa.Column('baseline_dice', sa.Float(), nullable=True),
    sa.Column('epochs', sa.Integer(), nullable=True),
    sa.Column('train_count', sa.Integer(), nullable=True),
    sa.Column('val_count', sa.Integer(), nullable=True),
    sa.Column('job_run_id', sa.Integer(), nullable=True),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_run_id'], ['job_runs.id'], name=op.f('fk_segmentation_models_job_run_id_job_runs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_segmentation_models_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_segmentation_models')),
    sa.UniqueConstraint('project_id', 'name', 'version', name=op.f('uq_segmentation_models_project_id'))
    )
    with op.batch_alter_table('segmentation_models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_segmentation_models_job_run_id'), ['job_run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_segmentation_models_project_id'), ['project_id'], unique=False)

    op.create_table('segmentation_model_rois',
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('roi_id', sa.Integer(), nullable=False),
    sa.Column('roi_version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['segmentation_models.id'], name=op.f('fk_segmentation_model_rois_model_id_segmentation_models'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('model_id', 'roi_id', name=op.f('pk_segmentation_model_rois'))
    )


def downgrade() -> None:
    op.drop_table('segmentation_model_rois')
    with op.batch_alter_table('segmentation_models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_segmentation_models_project_id'))
        batch_op.drop_index(batch_op.f('ix_segmentation_models_job_run_id'))

    op.drop_table('segmentation_models')
