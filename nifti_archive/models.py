"""The archive index: typed SQLAlchemy models for ARCHITECTURE.md's data model.

Rows that are in the trash carry the id of their ``Trash`` entry; every query of live data
filters on ``trash_id IS NULL``. Deleting a subject marks the subject, its studies and its
files with the same trash id, so file-level queries need not join upwards to know.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from nifti_archive.readings.ordering import CaseOrder

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A timestamp read back from the index, with its zone: SQLite returns them naive, written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Role(enum.Enum):
    """A user's role on a project; each role may do everything the ones before it may."""

    VIEWER = "viewer"
    READER = "reader"
    EDITOR = "editor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class AccountOrigin(enum.Enum):
    """Who vouches for an account's identity at log-in."""

    LOCAL = "local"  # a password kept here (Argon2id)
    OIDC = "oidc"  # an OpenID Connect provider
    LDAP = "ldap"  # a directory the user binds to


class TokenKind(enum.Enum):
    """What an API token was made for; the kind, never the token's name, tells them apart."""

    PERSONAL = "personal"  # made by its user (account page, nora --admin)
    ALIAS = "alias"  # an XNAT alias token: a short-lived stand-in for a password, named by a random alias
    JOB = "job"  # issued for one job run, limited to its project


class ConversionState(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    # Converted, but held back from the archive because the series looked incomplete.
    QUARANTINED = "quarantined"
    # Replaced by a request for a newer set of the series' instances.
    SUPERSEDED = "superseded"
    # Needs another series converted first (a DICOM SEG its source series); ``waiting_for`` names it.
    WAITING = "waiting"
    # Quarantined, then published anyway by a project admin (who and why are in the audit log).
    RELEASED = "released"
    # Quarantined, then thrown away by a project admin; the originals stay in Orthanc (--retry).
    DISCARDED = "discarded"


class ConversionReason(enum.Enum):
    """What asked for a conversion request."""

    # Orthanc's STABLE_SERIES for the series.
    STABLE_SERIES = "stable-series"
    # A new series whose senders closed their associations (before Orthanc's StableAge).
    SENT = "sent"
    # Found at start-up: a series whose STABLE_SERIES was missed while the archive was down.
    STARTUP = "startup"
    # The series had other instances when its request was converted.
    NEWER_INSTANCES = "newer-instances"
    # nora --reconvert.
    RECONVERT = "reconvert"
    # nora --retry: a failed, quarantined or discarded request converted again.
    RETRY = "retry"
    # The series a waiting request needed has been converted.
    SOURCE_CONVERTED = "source-converted"


class FileKind(enum.Enum):
    """What a registered file holds, as its name tells (or, for DICOM-only listings, its conversion)."""

    NIFTI = "nifti"
    JSON = "json"
    BVAL = "bval"
    BVEC = "bvec"
    DICOM = "dicom"
    # A study's listing of a series kept in Orthanc only (SR, PR, KO, ...): JSON, but no sidecar.
    DICOM_ONLY = "dicom-only"
    # A binary mask on the grid of a reference NIfTI; its ``Roi`` row says which, and whose.
    ROI = "roi"
    # Volumes the viewer opens beside NIfTI: NRRD (attached .nrrd or detached .nhdr header), FreeSurfer's MGH/MGZ.
    NRRD = "nrrd"
    MGH = "mgh"
    # Surface meshes, in world millimetres.
    GIFTI = "gifti"
    STL = "stl"
    OBJ = "obj"
    # FreeSurfer's binary surfaces carry no extension of their own: ``registration.file_kind`` names them.
    FREESURFER_SURFACE = "fs-surface"
    # Tractograms: MRtrix's (points in world millimetres) and TrackVis's (voxel millimetres and a voxel-to-RAS).
    TCK = "tck"
    TRK = "trk"
    OTHER = "other"


class RetrieveMethod(enum.Enum):
    """How Northanc retrieves from a PACS."""

    # C-MOVE to Northanc's AET: the usual.
    MOVE = "move"
    # C-GET on the query's own association, where the PACS cannot reach Northanc.
    GET = "get"


class Executor(enum.Enum):
    """Where a launch's runs execute."""

    LOCAL = "local"
    SLURM = "slurm"


class PullState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    ERROR = "error"
    DONE = "done"
    CANCELLED = "cancelled"


def _enum(cls: type[enum.Enum], name: str, length: int = 16) -> Enum:
    # Store the readable value, not the Python member name, and keep it a plain string
    # column so adding a member later needs no ALTER TYPE on PostgreSQL.
    return Enum(cls, name=name, native_enum=False, length=length, values_callable=lambda e: [m.value for m in e])


LIVE = text("trash_id IS NULL")
# Literal SQL, not bound values: PostgreSQL uses a partial index only for queries whose
# conditions it can prove imply the index's, and it cannot prove that of parameters.
ACTIVE_REQUESTS = text("state IN ('pending', 'running')")


def _unique_while_live(name: str, *columns: str) -> Index:
    """Unique among live rows only: a trashed row keeps its id while a new one takes it."""
    return Index(name, *columns, unique=True, sqlite_where=LIVE, postgresql_where=LIVE)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    pseudonymise: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # How converted series are named (see naming.py for the fields a template may use).
    subject_template: Mapped[str] = mapped_column(String(256), default="{PatientID}", server_default="{PatientID}")
    study_template: Mapped[str] = mapped_column(
        String(256), default="{StudyDate}_{AccessionNumber}", server_default="{StudyDate}_{AccessionNumber}"
    )
    series_template: Mapped[str] = mapped_column(
        String(256), default="{SeriesNumber:03d}_{SeriesDescription}", server_default="{SeriesNumber:03d}_{SeriesDescription}"
    )

    # The saved batch `--launch_autoexec` runs on a study (NORA's autoexecution pipeline).
    autoexec_batch: Mapped[str | None] = mapped_column(String(128))
    # The queue (Slurm partition) of the project's runs where a batch names none.
    default_queue: Mapped[str | None] = mapped_column(String(64))
    # Who may launch generic bash/python jobs (user code): editors, as in NORA, or admins only.
    generic_jobs_role: Mapped[Role] = mapped_column(
        _enum(Role, "role"), default=Role.EDITOR, server_default=Role.EDITOR.value
    )
    # Whether a batch that declares it needs the network gets it; runs have none otherwise.
    job_network_allowed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # How series map to BIDS names in an export (nifti_archive/bids/rules.py); None: the defaults.
    bids_rules: Mapped[str | None] = mapped_column(Text)
    # Raised by triggers (migration 0017) with every change to the project's studies table: the
    # version its cached counts and page boundaries belong to (query/study_table.py).
    table_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    subjects: Mapped[list[Subject]] = relationship(back_populates="project", passive_deletes=True)


class Trash(Base):
    """One delete command's worth of rows and files, restorable as a unit.

    Rows point here while in the trash. The reference has no ON DELETE action on purpose:
    removing a trash entry that still has rows must fail, never bring the rows back to life.
    """

    __tablename__ = "trash"
    # Entry ids are what users type to restore: never hand out a purged entry's id again.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    summary: Mapped[str] = mapped_column(Text)
    deleted_by: Mapped[str] = mapped_column(String(128))
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Subject(Base):
    __tablename__ = "subjects"
    __table_args__ = (_unique_while_live("uq_subjects_live_patient_id", "project_id", "patient_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    # The folder name and the id users see: a pseudonym where the project asks for one.
    patient_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    trash_id: Mapped[int | None] = mapped_column(ForeignKey("trash.id"), index=True)

    project: Mapped[Project] = relationship(back_populates="subjects")
    studies: Mapped[list[Study]] = relationship(back_populates="subject", passive_deletes=True)
    identity: Mapped[SubjectIdentity | None] = relationship(back_populates="subject", passive_deletes=True)
    tags: Mapped[list[SubjectTag]] = relationship(passive_deletes=True, cascade="all, delete-orphan")


class SubjectIdentity(Base):
    """Who a subject really is. Kept apart so that only roles allowed to see it read it."""

    __tablename__ = "subject_identities"

    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"), primary_key=True)
    patient_name: Mapped[str] = mapped_column(String(256), default="")
    real_patient_id: Mapped[str] = mapped_column(String(128), default="")

    subject: Mapped[Subject] = relationship(back_populates="identity")


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (
        _unique_while_live("uq_studies_live_study_id", "subject_id", "study_id"),
        # The studies table sorted by these columns is read in their order (and a cursor seeks in them).
        Index("ix_studies_live_description", "description", sqlite_where=LIVE, postgresql_where=LIVE),
        Index("ix_studies_live_study_date", "study_date", sqlite_where=LIVE, postgresql_where=LIVE),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"), index=True)
    study_id: Mapped[str] = mapped_column(String(128))
    study_date: Mapped[date | None] = mapped_column(Date)
    description: Mapped[str] = mapped_column(String(256), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    trash_id: Mapped[int | None] = mapped_column(ForeignKey("trash.id"), index=True)

    subject: Mapped[Subject] = relationship(back_populates="studies")
    files: Mapped[list[File]] = relationship(back_populates="study", passive_deletes=True)
    tags: Mapped[list[StudyTag]] = relationship(passive_deletes=True, cascade="all, delete-orphan")


class File(Base):
    __tablename__ = "files"
    __table_args__ = (_unique_while_live("uq_files_live_path", "study_id", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    # Relative to the study folder, '/'-separated, e.g. "003_t1_mprage/s003.nii.gz".
    path: Mapped[str] = mapped_column(String(1024))
    kind: Mapped[FileKind] = mapped_column(_enum(FileKind, "file_kind"))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    trash_id: Mapped[int | None] = mapped_column(ForeignKey("trash.id"), index=True)

    # Provenance: where a converted file came from and what made it.
    source_series_uid: Mapped[str | None] = mapped_column(String(64))
    orthanc_series_id: Mapped[str | None] = mapped_column(String(64))
    instance_count: Mapped[int | None] = mapped_column(Integer)
    converter: Mapped[str | None] = mapped_column(String(64))
    converter_version: Mapped[str | None] = mapped_column(String(64))
    converter_flags: Mapped[str | None] = mapped_column(Text)
    # Why the file is published although its conversion was held back: a release's who and why.
    provenance_note: Mapped[str | None] = mapped_column(Text)
    derived_from_id: Mapped[int | None] = mapped_column(ForeignKey("files.id", ondelete="SET NULL"))

    study: Mapped[Study] = relationship(back_populates="files")
    tags: Mapped[list[FileTag]] = relationship(passive_deletes=True, cascade="all, delete-orphan")


class SubjectTag(Base):
    __tablename__ = "subject_tags"

    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class StudyTag(Base):
    __tablename__ = "study_tags"

    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class FileTag(Base):
    __tablename__ = "file_tags"

    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("provider", "external_id", name="uq_users_provider_external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    is_site_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set for one-time passwords: the first log-in must choose a new one.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    origin: Mapped[AccountOrigin] = mapped_column(_enum(AccountOrigin, "account_origin"), default=AccountOrigin.LOCAL,
                                                  server_default=AccountOrigin.LOCAL.value)
    # Which provider or directory (its name in the settings) and who it says the user is there
    # (an OIDC issuer's subject, an LDAP DN): institutional accounts are found again by these.
    provider: Mapped[str | None] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(512))
    # Wrong passwords since the last good one, and until when log-ins are refused after too many.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    roles: Mapped[list[ProjectRole]] = relationship(back_populates="user", passive_deletes=True)


class ProjectRole(Base):
    __tablename__ = "project_roles"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))

    user: Mapped[User] = relationship(back_populates="roles")
    project: Mapped[Project] = relationship()


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    # The token's first characters, so a user can tell tokens apart without the secret.
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A scoped token acts on this project only (a job run's token); None: wherever its user may.
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    # The run a job's token was issued for; it is revoked when the run ends.
    job_run_id: Mapped[int | None] = mapped_column(ForeignKey("job_runs.id", ondelete="SET NULL"))
    kind: Mapped[TokenKind] = mapped_column(_enum(TokenKind, "token_kind"), default=TokenKind.PERSONAL,
                                            server_default=TokenKind.PERSONAL.value)

    user: Mapped[User] = relationship()

    def is_live(self, now: datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or as_utc(self.expires_at) > now)


class UserSession(Base):
    """A log-in held on the server, so that log-out, a password change or a revoked token ends it.

    The cookie carries a random secret; only its SHA-256 is stored here.
    """

    __tablename__ = "user_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The token a session was opened with (NORA's URL call): revoking the token ends the session.
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoginThrottle(Base):
    """Wrong passwords counted per account and per client address, for back-off between attempts.

    ``key`` is ``user:<name>`` or ``address:<ip>``; unknown user names are counted like known
    ones so that the throttle tells a stranger nothing about which accounts exist.
    """

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    blocked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BatchLaunch(Base):
    """One launch of a batch: the validated specification as it was launched, and where it runs."""

    __tablename__ = "batch_launches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    # The batch specification (jobs/spec.py validates it); kept verbatim so a rerun runs the same.
    spec: Mapped[str] = mapped_column(Text)
    executor: Mapped[Executor] = mapped_column(_enum(Executor, "executor"))
    launched_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SavedBatch(Base):
    __tablename__ = "saved_batches"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    spec: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class JobRun(Base):
    """The state of one batch run on one study (or subject), as the filter's JOB: sees it."""

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"), index=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    state: Mapped[JobState] = mapped_column(_enum(JobState, "job_state"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    launch_id: Mapped[int | None] = mapped_column(ForeignKey("batch_launches.id", ondelete="CASCADE"), index=True)
    # The executor's handle: a process id (local) or ARRAYJOB_TASK (slurm).
    executor_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    log_path: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    message: Mapped[str] = mapped_column(Text, default="", server_default="")
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dismissed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


class RunStudy(Base):
    """A study a project-level run covers: a training learns from every study of its selection."""

    __tablename__ = "run_studies"

    run_id: Mapped[int] = mapped_column(ForeignKey("job_runs.id", ondelete="CASCADE"), primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True, index=True)


class RoutingRule(Base):
    """Sends a series to a project by the AET it was sent to, or by a regex on one of its tags."""

    __tablename__ = "routing_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    # Rules are tried in this order (then by id); the first that matches wins.
    position: Mapped[int] = mapped_column(Integer, default=100)
    called_aet: Mapped[str | None] = mapped_column(String(16))
    tag: Mapped[str | None] = mapped_column(String(64))
    pattern: Mapped[str | None] = mapped_column(String(512))

    project: Mapped[Project] = relationship()


class IngestOverride(Base):
    """Where an imported or pulled series goes, whatever the routing rules say."""

    __tablename__ = "ingest_overrides"

    series_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    patient_id: Mapped[str | None] = mapped_column(String(128))
    study_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ConversionRequest(Base):
    """The durable conversion queue: one row per series and set of its instances."""

    __tablename__ = "conversion_requests"
    __table_args__ = (
        UniqueConstraint("orthanc_series_id", "instances_hash"),
        # Workers claim the oldest claimable request: this index holds the pending and running
        # ones only, in order, however many finished ones the table keeps.
        Index("ix_conversion_requests_active", "id", sqlite_where=ACTIVE_REQUESTS, postgresql_where=ACTIVE_REQUESTS),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    orthanc_series_id: Mapped[str] = mapped_column(String(64), index=True)
    instances_hash: Mapped[str] = mapped_column(String(64))
    instance_count: Mapped[int] = mapped_column(Integer)
    series_instance_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    state: Mapped[ConversionState] = mapped_column(_enum(ConversionState, "conversion_state"), index=True)
    reason: Mapped[ConversionReason] = mapped_column(_enum(ConversionReason, "conversion_reason", length=32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"))
    # Where the result went: the series folder below the project, or the quarantine folder.
    target: Mapped[str] = mapped_column(String(1024), default="")
    # The study and series folder the series was placed in (held there while quarantined).
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="SET NULL"), index=True)
    series_folder: Mapped[str] = mapped_column(String(256), default="", server_default="")
    # The SeriesInstanceUID a waiting request needs converted before it can go on.
    waiting_for: Mapped[str] = mapped_column(String(64), default="", server_default="", index=True)
    worker: Mapped[str] = mapped_column(String(64), default="")
    # A running request's worker renews this while it converts; once it has passed, the worker
    # is taken for dead (killed, its host gone) and another may claim the request.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class ViewerPreset(Base):
    """An autoloader preset: which files of a study open in which viewport, with overlays and windowing.

    ``spec`` is the preset document that ``viewer_presets.parse_preset`` validates.
    """

    __tablename__ = "viewer_presets"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    spec: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class SharedLink(Base):
    """A saved viewer state behind a short random key; opening it still needs a role on the project."""

    __tablename__ = "shared_links"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # The viewer state that ``viewer_state.parse_state`` validates: layout, files per viewport, windowing.
    state: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PacsPeer(Base):
    """A PACS Northanc queries and retrieves from; Orthanc knows it as a DICOM modality of this name."""

    __tablename__ = "pacs_peers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    aet: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    retrieve: Mapped[RetrieveMethod] = mapped_column(
        _enum(RetrieveMethod, "retrieve_method", length=8), default=RetrieveMethod.MOVE
    )
    # What the peer may ask of Northanc beyond storing our retrievals: a site admin's explicit choice.
    allow_query: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    allow_retrieve: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DicomSender(Base):
    """A scanner or node that may C-STORE into Northanc, known by its AET and its host."""

    __tablename__ = "dicom_senders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    aet: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RoutingRuleSender(Base):
    """The senders a routing rule accepts; a rule without any accepts every sender."""

    __tablename__ = "routing_rule_senders"

    rule_id: Mapped[int] = mapped_column(ForeignKey("routing_rules.id", ondelete="CASCADE"), primary_key=True)
    sender_id: Mapped[int] = mapped_column(ForeignKey("dicom_senders.id", ondelete="CASCADE"), primary_key=True)


class PullCohort(Base):
    """One cohort list given to a pull: its rows are pulled from one PACS into one project."""

    __tablename__ = "pull_cohorts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    peer_id: Mapped[int] = mapped_column(ForeignKey("pacs_peers.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(1024))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PullRow(Base):
    """One study of a cohort and how its pull went: the durable pull queue."""

    __tablename__ = "pull_rows"
    __table_args__ = (Index("ix_pull_rows_state_next_attempt_at", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cohort_id: Mapped[int] = mapped_column(ForeignKey("pull_cohorts.id", ondelete="CASCADE"), index=True)
    line: Mapped[int] = mapped_column(Integer)
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_description: Mapped[str] = mapped_column(String(128), default="")
    state: Mapped[PullState] = mapped_column(_enum(PullState, "pull_state"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    message: Mapped[str] = mapped_column(Text, default="")
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    series_count: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class AuditEvent(Base):
    """Who saw or did something that the archive must be able to account for (a real name revealed)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    username: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")


class RoiOrigin(enum.Enum):
    """How an ROI version came to be."""

    # Drawn in the viewer or uploaded as a mask.
    DRAWN = "drawn"
    DICOM_SEG = "dicom-seg"
    # Made by an operation (morphology, set operation) on other ROIs.
    OPERATION = "operation"
    CONSENSUS = "consensus"
    # Proposed by an algorithm (a job, a segmentation model).
    ALGORITHM = "algorithm"
    # Made with the segmentation assistant's interactive tools: a program's proposals steered by a
    # user's clicks (DICOM's SEMIAUTOMATIC).
    ASSISTED = "assisted"


class Roi(Base):
    """One author's version of a labelled ROI: its mask is ``file`` (kind roi), on the grid of
    ``reference_file``. Saving again makes a new file and row (the old ones go to the trash);
    ``version`` counts the saves of that label by that author on that reference."""

    __tablename__ = "rois"

    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    reference_file_id: Mapped[int | None] = mapped_column(ForeignKey("files.id", ondelete="SET NULL"), index=True)
    label: Mapped[str] = mapped_column(String(64), index=True)
    colour: Mapped[str] = mapped_column(String(7))
    author: Mapped[str] = mapped_column(String(128))
    origin: Mapped[RoiOrigin] = mapped_column(_enum(RoiOrigin, "roi_origin"))
    algorithm: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    # The DICOM SEG that carries this version in Orthanc: written by the archive, or read from it.
    seg_series_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    seg_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    file: Mapped[File] = relationship(foreign_keys=[file_id])


class MarkerSet(Base):
    """A named set of points in a study (NORA's markers), in world coordinates (mm, RAS+)."""

    __tablename__ = "marker_sets"
    __table_args__ = (_unique_while_live("uq_marker_sets_live_name", "study_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    trash_id: Mapped[int | None] = mapped_column(ForeignKey("trash.id"), index=True)

    points: Mapped[list[MarkerPoint]] = relationship(
        order_by="MarkerPoint.position", cascade="all, delete-orphan", passive_deletes=True
    )


class MarkerPoint(Base):
    __tablename__ = "marker_points"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    marker_set_id: Mapped[int] = mapped_column(ForeignKey("marker_sets.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    z: Mapped[float] = mapped_column(Float)
    name: Mapped[str] = mapped_column(String(64), default="")


class ModelKind(enum.Enum):
    """Where a segmentation model came from."""

    # Trained by the archive's segtrain job on the project's ROIs.
    TRAINED = "trained"
    # A user's own TorchScript file, registered as it is.
    REGISTERED = "registered"


class ModelState(enum.Enum):
    # Its training run is queued or running.
    TRAINING = "training"
    # Its file loads and runs in the assistant's environment.
    READY = "ready"
    # Training failed, or the file does not load; ``reason`` says why. Never offered.
    FAILED = "failed"


class SegmentationModel(Base):
    """One version of a project's segmentation model: a TorchScript file under the models folder
    (``<models>/<project>/<name>/v<version>/model.ts``, ``path`` relative to it) that segments
    ``label``. Users are offered published, ready versions only."""

    __tablename__ = "segmentation_models"
    __table_args__ = (UniqueConstraint("project_id", "name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[ModelKind] = mapped_column(_enum(ModelKind, "model_kind"))
    state: Mapped[ModelState] = mapped_column(_enum(ModelState, "model_state"))
    published: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    path: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    # Measured by the trainer on its held-out ROIs; none for a registered model.
    val_dice: Mapped[float | None] = mapped_column(Float)
    baseline_dice: Mapped[float | None] = mapped_column(Float)
    epochs: Mapped[int | None] = mapped_column(Integer)
    train_count: Mapped[int | None] = mapped_column(Integer)
    val_count: Mapped[int | None] = mapped_column(Integer)
    job_run_id: Mapped[int | None] = mapped_column(ForeignKey("job_runs.id", ondelete="SET NULL"), index=True)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SegmentationModelRoi(Base):
    """An ROI version a model was trained on. A record, not a reference (no foreign key to the
    ROI): it still says what the model learnt from after that ROI is purged."""

    __tablename__ = "segmentation_model_rois"

    model_id: Mapped[int] = mapped_column(ForeignKey("segmentation_models.id", ondelete="CASCADE"), primary_key=True)
    roi_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    roi_version: Mapped[int] = mapped_column(Integer)


class DropAction(enum.Enum):
    """What a drop folder does with a file once it is imported."""

    # Moved to the folder's done/ subfolder: the folder holds only what is still to come.
    MOVE = "move"
    # Left where the instrument wrote it, and remembered by size and mtime.
    KEEP = "keep"


class DropState(enum.Enum):
    # Claimed before the import starts: after a crash, the next poller imports it again
    # (Orthanc keeps one copy of an instance; an extra file already in its study is not written twice).
    IMPORTING = "importing"
    # Imported; in a MOVE folder it may still wait to be moved to done/.
    DONE = "done"
    # Refused or failed; ``message`` says why. Left in place only when it could not be moved.
    FAILED = "failed"


class DropFolder(Base):
    """A folder an instrument writes into, polled by the drop folder service. Without a project,
    each series goes where the routing rules' tag rules send it."""

    __tablename__ = "drop_folders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    path: Mapped[str] = mapped_column(String(1024))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    stable_seconds: Mapped[float] = mapped_column(Float)
    action: Mapped[DropAction] = mapped_column(_enum(DropAction, "drop_action"))
    # Where files with no DICOM beside them go in the project: this subject, and this study or,
    # when empty, one per day named by the entry's date. None in a folder without a project.
    extra_subject: Mapped[str | None] = mapped_column(String(128))
    extra_study: Mapped[str] = mapped_column(String(128), default="", server_default="")
    # Why the last poll of the folder failed (it disappeared, could not be listed); empty when it worked.
    problem: Mapped[str] = mapped_column(Text, default="", server_default="")
    problem_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    project: Mapped[Project | None] = relationship()


class DropEntry(Base):
    """One entry of a drop folder (a file, an archive, or a top-level subfolder imported as one),
    known by its name and by the size and mtime it had when it was imported."""

    __tablename__ = "drop_entries"
    __table_args__ = (UniqueConstraint("folder_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("drop_folders.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[float] = mapped_column(Float)
    # 1 for a file; for a subfolder, the number of files in it.
    files: Mapped[int] = mapped_column(Integer)
    state: Mapped[DropState] = mapped_column(_enum(DropState, "drop_state"))
    message: Mapped[str] = mapped_column(Text, default="", server_default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class ReadingState(enum.Enum):
    """Where a reading is: configured, read, or closed to further answers."""

    DRAFT = "draft"
    OPEN = "open"
    CLOSED = "closed"


class ReadingMode(enum.Enum):
    # Each reader answers every case on their own.
    INDIVIDUAL = "individual"
    # The readers share one set of answers per case: any of them continues where another stopped.
    JOINT = "joint"


class ReadingPhase(enum.Enum):
    """Training cases are read first, on their own cases; the serious phase holds the study's results."""

    TRAINING = "training"
    SERIOUS = "serious"


class ReadingForm(Base):
    """A reading form by name; its documents are its versions."""

    __tablename__ = "reading_forms"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReadingFormVersion(Base):
    """One saved document of a form (nifti_archive/readings/forms.py validates it). A changed
    form is a new version, so results keep the questions they answered."""

    __tablename__ = "reading_form_versions"
    __table_args__ = (UniqueConstraint("form_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    form_id: Mapped[int] = mapped_column(ForeignKey("reading_forms.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[str] = mapped_column(Text)
    saved_by: Mapped[str] = mapped_column(String(128))
    saved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Reading(Base):
    """A reader study: which cases, read with which form, under which rules."""

    __tablename__ = "readings"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    form_id: Mapped[int] = mapped_column(ForeignKey("reading_forms.id"), index=True)
    state: Mapped[ReadingState] = mapped_column(_enum(ReadingState, "reading_state"))
    mode: Mapped[ReadingMode] = mapped_column(_enum(ReadingMode, "reading_mode"))
    case_order: Mapped[CaseOrder] = mapped_column(_enum(CaseOrder, "case_order"))
    repetitions: Mapped[int] = mapped_column(Integer)
    # The studies table's filter bars that pick the cases, as a JSON object {column: filter text}.
    cases_filter: Mapped[str] = mapped_column(Text)
    training_filter: Mapped[str | None] = mapped_column(Text)
    preset: Mapped[str | None] = mapped_column(String(64))
    blind_identity: Mapped[bool] = mapped_column(Boolean)
    blind_dates: Mapped[bool] = mapped_column(Boolean)
    blind_description: Mapped[bool] = mapped_column(Boolean)
    blind_other_readers: Mapped[bool] = mapped_column(Boolean)
    blind_own_earlier: Mapped[bool] = mapped_column(Boolean)
    instructions: Mapped[str] = mapped_column(Text, default="")
    instructions_url: Mapped[str] = mapped_column(String(2000), default="")
    allow_restart_training: Mapped[bool] = mapped_column(Boolean)
    allow_restart_serious: Mapped[bool] = mapped_column(Boolean)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    form: Mapped[ReadingForm] = relationship()
    stages: Mapped[list[ReadingStage]] = relationship(
        order_by="ReadingStage.position", cascade="all, delete-orphan", passive_deletes=True
    )
    readers: Mapped[list[ReadingReader]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class ReadingStage(Base):
    """One pass over the cases (e.g. without, then with an algorithm's result as an overlay)."""

    __tablename__ = "reading_stages"

    reading_id: Mapped[int] = mapped_column(ForeignKey("readings.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    # A file pattern naming the study's file shown over the preset's images in this stage.
    overlay: Mapped[str | None] = mapped_column(String(512))


class ReadingReader(Base):
    """A reader assigned to a reading, with the seeds of their current sessions' random orders."""

    __tablename__ = "reading_readers"

    reading_id: Mapped[int] = mapped_column(ForeignKey("readings.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    training_seed: Mapped[str] = mapped_column(String(32))
    serious_seed: Mapped[str] = mapped_column(String(32))


class ReadingCase(Base):
    """A study a reading reads, chosen by its filter when the reading started."""

    __tablename__ = "reading_cases"
    __table_args__ = (UniqueConstraint("reading_id", "phase", "study_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reading_id: Mapped[int] = mapped_column(ForeignKey("readings.id", ondelete="CASCADE"))
    phase: Mapped[ReadingPhase] = mapped_column(_enum(ReadingPhase, "reading_phase"))
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    # The place in the reading's default order (by subject, then study).
    position: Mapped[int] = mapped_column(Integer)


JOINT = text("reader_id IS NULL")
INDIVIDUAL = text("reader_id IS NOT NULL")


class ReadingResult(Base):
    """One reader's answers to one case in one stage and repetition; in a joint reading the
    readers share one row (``reader_id`` NULL), ``saved_by`` naming who saved it last."""

    __tablename__ = "reading_results"
    __table_args__ = (
        Index("uq_reading_results_individual", "case_id", "reader_id", "stage", "repetition", unique=True,
              sqlite_where=INDIVIDUAL, postgresql_where=INDIVIDUAL),
        Index("uq_reading_results_joint", "case_id", "stage", "repetition", unique=True,
              sqlite_where=JOINT, postgresql_where=JOINT),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("reading_cases.id", ondelete="CASCADE"))
    reader_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    stage: Mapped[int] = mapped_column(Integer)
    repetition: Mapped[int] = mapped_column(Integer)
    form_version_id: Mapped[int] = mapped_column(ForeignKey("reading_form_versions.id"), index=True)
    answers: Mapped[str] = mapped_column(Text)
    active_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    completed: Mapped[bool] = mapped_column(Boolean, default=False)
    saved_by: Mapped[str] = mapped_column(String(128))
    saved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OAuthClient(Base):
    """An application the portal signs users in to as an OAuth2 provider (the notebook hub).

    Only the SHA-256 of its secret is kept; a code is sent to its one registered redirect URI.
    """

    __tablename__ = "oauth_clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    redirect_uri: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OAuthGrantKind(enum.Enum):
    CODE = "code"  # an authorization code: single use, a minute
    ACCESS = "access"  # an access token: reads the user's identity (userinfo), nothing else


class OAuthGrant(Base):
    """An authorization code or access token given to an OAuth client for a user; only its
    SHA-256 is kept. A code records the redirect URI it was issued for and when it was used."""

    __tablename__ = "oauth_grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[OAuthGrantKind] = mapped_column(_enum(OAuthGrantKind, "oauth_grant_kind"))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    redirect_uri: Mapped[str] = mapped_column(String(1000))
    # A code's PKCE challenge (RFC 7636, S256), when the client sent one: the token request
    # must then prove it holds the verifier.
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
