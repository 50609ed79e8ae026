"""viewer file kinds

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03 13:20:00

The viewer opens NRRD, MGH/MGZ, meshes (GIFTI, STL, OBJ, FreeSurfer surfaces) and tractograms
(TCK, TRK), and the archive records them as kinds of their own. The kind column is a plain string
(no ALTER TYPE needed); files registered before as ``other`` take the kind their names give, by
the rule as it stood at this revision (``registration._KINDS``).
"""

from alembic import op
import sqlalchemy as sa


revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None

SUFFIXES = {
    'nrrd': ('.nrrd', '.nhdr'),
    'mgh': ('.mgh', '.mgz'),
    'gifti': ('.gii',),
    'stl': ('.stl',),
    'obj': ('.obj',),
    'fs-surface': ('.pial', '.white', '.inflated', '.sphere', '.sphere.reg', '.smoothwm'),
    'tck': ('.tck',),
    'trk': ('.trk',),
}


def upgrade() -> None:
    # The name's end compared, not LIKE: an underscore in a LIKE pattern matches any character,
    # and whether LIKE ignores case differs between the databases.
    for kind, suffixes in SUFFIXES.items():
        for suffix in suffixes:
            size = len(suffix)
            op.execute(sa.text(
                f"UPDATE files SET kind = :kind WHERE kind = 'other' AND length(path) > {size} "
                f"AND lower(substr(path, length(path) - {size - 1})) = :suffix"
            ).bindparams(kind=kind, suffix=suffix))


def downgrade() -> None:
    op.execute(sa.text("UPDATE files SET kind = 'other' WHERE kind IN :kinds")
               .bindparams(sa.bindparam('kinds', tuple(SUFFIXES), expanding=True)))
