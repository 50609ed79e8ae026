"""pacs peers

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 01:30:00

The PACS Northanc queries (C-FIND) and retrieves from (C-MOVE or C-GET), registered in Orthanc
as DICOM modalities.
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'pacs_peers',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('aet', sa.String(length=16), nullable=False),
        sa.Column('host', sa.String(length=255), nullable=False),
        sa.Column('port', sa.Integer(), nullable=False),
        sa.Column('retrieve', sa.String(length=8), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_pacs_peers')),
        sa.UniqueConstraint('name', name=op.f('uq_pacs_peers_name')),
    )


def downgrade() -> None:
    op.drop_table('pacs_peers')
