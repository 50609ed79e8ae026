"""token kind

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 22:50:00

What an API token was made for (a user's own, an XNAT alias, a job run's), so that no code
has to tell tokens apart by their names. Tokens made before are sorted by what told them apart
until now: an alias token's name, a run token's project scope or run.
"""

from alembic import op
import sqlalchemy as sa


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.Enum('personal', 'alias', 'job', name='token_kind', native_enum=False, length=16), server_default='personal', nullable=False))
    op.execute("UPDATE api_tokens SET kind = 'alias' WHERE name LIKE 'xnat alias %'")
    op.execute("UPDATE api_tokens SET kind = 'job' WHERE project_id IS NOT NULL OR job_run_id IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('kind')
