"""job sandbox, dicom senders, server sessions and login throttles

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 05:23:50

Job runs in a sandbox with scoped tokens (generic jobs' minimum role, network allowance),
DICOM senders and what peers may ask of Northanc, log-ins held on the server, and log-in
back-off per account and per client address.
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dicom_senders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('aet', sa.String(length=16), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dicom_senders')),
    sa.UniqueConstraint('name', name=op.f('uq_dicom_senders_name'))
    )
    op.create_table('login_throttles',
    sa.Column('key', sa.String(length=160), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('last_failure_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('blocked_until', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_login_throttles'))
    )
    op.create_table('routing_rule_senders',
    sa.Column('rule_id', sa.Integer(), nullable=False),
    sa.Column('sender_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['rule_id'], ['routing_rules.id'], name=op.f('fk_routing_rule_senders_rule_id_routing_rules'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sender_id'], ['dicom_senders.id'], name=op.f('fk_routing_rule_senders_sender_id_dicom_senders'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('rule_id', 'sender_id', name=op.f('pk_routing_rule_senders'))
    )
    op.create_table('user_sessions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=True),
    sa.Column('address', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'], name=op.f('fk_user_sessions_token_id_api_tokens'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user_sessions'))
    )
    with op.batch_alter_table('user_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_sessions_token_id'), ['token_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_user_sessions_user_id'), ['user_id'], unique=False)

    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('project_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('job_run_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_api_tokens_project_id_projects'), 'projects', ['project_id'], ['id'], ondelete='CASCADE')
        batch_op.create_foreign_key(batch_op.f('fk_api_tokens_job_run_id_job_runs'), 'job_runs', ['job_run_id'], ['id'], ondelete='SET NULL')

    with op.batch_alter_table('pacs_peers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('allow_query', sa.Boolean(), server_default=sa.text('false'), nullable=False))
        batch_op.add_column(sa.Column('allow_retrieve', sa.Boolean(), server_default=sa.text('false'), nullable=False))

    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('generic_jobs_role', sa.Enum('viewer', 'reader', 'editor', 'admin', name='role', native_enum=False, length=16), server_default='editor', nullable=False))
        batch_op.add_column(sa.Column('job_network_allowed', sa.Boolean(), server_default=sa.text('false'), nullable=False))



def downgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('job_network_allowed')
        batch_op.drop_column('generic_jobs_role')

    with op.batch_alter_table('pacs_peers', schema=None) as batch_op:
        batch_op.drop_column('allow_retrieve')
        batch_op.drop_column('allow_query')

    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_api_tokens_job_run_id_job_runs'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_api_tokens_project_id_projects'), type_='foreignkey')
        batch_op.drop_column('job_run_id')
        batch_op.drop_column('project_id')

    with op.batch_alter_table('user_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_sessions_user_id'))
        batch_op.drop_index(batch_op.f('ix_user_sessions_token_id'))

    op.drop_table('user_sessions')
    op.drop_table('routing_rule_senders')
    op.drop_table('login_throttles')
    op.drop_table('dicom_senders')
