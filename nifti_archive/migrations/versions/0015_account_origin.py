"""account origin

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 16:10:00

Where an account's identity comes from (a local password, an OpenID Connect provider, an LDAP
directory), and who the provider says the user is, so that institutional accounts are found again.
"""

from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('origin', sa.Enum('local', 'oidc', 'ldap', name='account_origin', native_enum=False, length=16), server_default='local', nullable=False))
        batch_op.add_column(sa.Column('provider', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('external_id', sa.String(length=512), nullable=True))
        batch_op.create_unique_constraint('uq_users_provider_external_id', ['provider', 'external_id'])


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_constraint('uq_users_provider_external_id', type_='unique')
        batch_op.drop_column('external_id')
        batch_op.drop_column('provider')
        batch_op.drop_column('origin')
