"""``nora --admin ...``: schema set-up, users, project roles and API tokens."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Sequence
from typing import IO

from sqlalchemy.orm import Session

from nifti_archive import accounts, compose, db, installation
from nifti_archive.archive import Archive, get_project
from nifti_archive.catalog import projects
from nifti_archive.cli import maintenance_commands
from nifti_archive.cli.commands import read_file_argument
from nifti_archive.cli.parser import OneLineParser
from nifti_archive.cli.worker_command import add_admin_parser as add_workers_parser
from nifti_archive.cli.worker_command import run_admin_workers
from nifti_archive.dropfolders import folders as dropfolders
from nifti_archive.identity import linking
from nifti_archive.identity.config import IdentityProviders
from nifti_archive.models import DropAction, RetrieveMethod, Role
from nifti_archive.orthanc_api import orthanc_for
from nifti_archive.pacs import peers, senders


def build_admin_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="nora --admin", description="Administration of the archive and its users.")
    areas = parser.add_subparsers(dest="area", required=True, parser_class=OneLineParser)

    areas.add_parser("init", help="create or upgrade the archive's tables; create the first admin")
    areas.add_parser("compose", help="print the production docker-compose.yml (generated from the settings and the native services)")

    user = areas.add_parser("user", help="user accounts").add_subparsers(dest="verb", required=True, parser_class=OneLineParser)
    add = user.add_parser("add", help="create a user with a one-time password")
    add.add_argument("username")
    add.add_argument("--site-admin", action="store_true", help="may administer every project and all users")
    add.add_argument("--provider", help="an institutional account, linked at its owner's first log-in through this "
                                        "OIDC provider or LDAP directory (for providers with accounts = \"link\")")
    user.add_parser("list", help="list users with where each comes from (local, oidc:<provider>, ldap:<directory>)")
    user.add_parser("show", help="one user's origin, external id, flags and roles").add_argument("username")
    for verb, text in [
        ("passwd", "give the user a new one-time password"),
        ("disable", "stop the user logging in"),
        ("enable", "let a disabled user log in again"),
        ("unlock", "lift the back-off that wrong passwords put on the account"),
    ]:
        user.add_parser(verb, help=text).add_argument("username")

    role = areas.add_parser("role", help="roles on projects").add_subparsers(dest="verb", required=True, parser_class=OneLineParser)
    grant = role.add_parser("grant", help="give a user a role on a project (viewer, reader, editor, admin)")
    grant.add_argument("username")
    grant.add_argument("project")
    grant.add_argument("role")
    revoke = role.add_parser("revoke", help="take a user's role on a project away")
    revoke.add_argument("username")
    revoke.add_argument("project")
    role.add_parser("list", help="list roles").add_argument("--project")

    token = areas.add_parser("token", help="API tokens").add_subparsers(dest="verb", required=True, parser_class=OneLineParser)
    create = token.add_parser("create", help="issue a token (shown once)")
    create.add_argument("username")
    create.add_argument("--name", default="cli", help="what the token is for")
    create.add_argument("--expires-days", type=int, help="lifetime in days (default: until revoked)")
    token.add_parser("list", help="a user's tokens").add_argument("username")
    token.add_parser("revoke", help="revoke a token by id").add_argument("token_id", type=int)

    project = areas.add_parser("project", help="a project's ingestion settings").add_subparsers(
        dest="verb", required=True, parser_class=OneLineParser
    )
    project.add_parser("show", help="show a project's settings").add_argument("project")
    settings = project.add_parser("set", help="change a project's settings")
    settings.add_argument("project")
    settings.add_argument("--description")
    settings.add_argument("--pseudonymise", choices=["yes", "no"], help="replace patient ids by keyed pseudonyms")
    settings.add_argument("--subject-template", help="e.g. {PatientID}")
    settings.add_argument("--study-template", help="e.g. {StudyDate}_{AccessionNumber}")
    settings.add_argument("--series-template", help="e.g. {SeriesNumber:03d}_{SeriesDescription}")
    settings.add_argument("--autoexec", metavar="BATCH", help="the saved batch --launch_autoexec runs ('' for none)")
    settings.add_argument("--queue", metavar="PARTITION", help="the queue of runs whose batch names none ('' for the default)")
    settings.add_argument("--generic-jobs", choices=[Role.EDITOR.value, Role.ADMIN.value], help="the role that may launch bash/python jobs")
    settings.add_argument("--job-network", choices=["yes", "no"], help="whether batches that ask for the network get it")
    settings.add_argument("--bids-rules", metavar="FILE", help="the BIDS mapping rules (JSON) of exports ('' for the defaults)")

    route = areas.add_parser("route", help="routing of received series to projects").add_subparsers(
        dest="verb", required=True, parser_class=OneLineParser
    )
    add_route = route.add_parser("add", help="route by the AET a series was sent to, or by a regex on a tag")
    add_route.add_argument("project")
    add_route.add_argument("--aet", help="the called AET (a project may publish its own, e.g. STROKE)")
    add_route.add_argument("--tag", help="a DICOM keyword such as StudyDescription or InstitutionName")
    add_route.add_argument("--pattern", help="a regular expression searched in the tag's value")
    add_route.add_argument("--position", type=int, default=100, help="rules are tried by position, then by age")
    add_route.add_argument("--senders", metavar="NAME,...", help="only series from these registered senders match")
    route.add_parser("list", help="list the rules in the order they are tried")
    route.add_parser("remove", help="remove a rule by id").add_argument("rule_id", type=int)

    peer = areas.add_parser("pacs", help="PACS peers to query and retrieve from").add_subparsers(
        dest="verb", required=True, parser_class=OneLineParser
    )
    for verb, text in [("add", "add a PACS (Orthanc learns it as a DICOM modality)"), ("edit", "change a PACS")]:
        entry = peer.add_parser(verb, help=text)
        entry.add_argument("name", help="Northanc's name for it, e.g. hospital")
        entry.add_argument("aet", help="its application entity title")
        entry.add_argument("host")
        entry.add_argument("port", type=int)
        entry.add_argument("--retrieve", choices=[m.value for m in RetrieveMethod], default=RetrieveMethod.MOVE.value,
                           help="C-MOVE to Northanc's AET (default) or C-GET")
        entry.add_argument("--allow-query", choices=["yes", "no"], help="may it C-FIND Northanc (default no)")
        entry.add_argument("--allow-retrieve", choices=["yes", "no"], help="may it C-MOVE/C-GET from Northanc (default no)")
    peer.add_parser("list", help="list the PACS peers")
    peer.add_parser("remove", help="remove a PACS").add_argument("name")
    peer.add_parser("echo", help="test a PACS with C-ECHO").add_argument("name")

    sender = areas.add_parser("sender", help="scanners and nodes that send DICOM to Northanc").add_subparsers(
        dest="verb", required=True, parser_class=OneLineParser
    )
    add_sender = sender.add_parser("add", help="register a sender (Orthanc takes its C-STORE from its host)")
    add_sender.add_argument("name", help="Northanc's name for it, e.g. ct1")
    add_sender.add_argument("aet", help="the AET it calls from")
    add_sender.add_argument("host", help="its IP address")
    sender.add_parser("list", help="list the senders")
    sender.add_parser("remove", help="forget a sender").add_argument("name")

    drop = areas.add_parser("dropfolder", help="folders an instrument writes into, imported as they fill").add_subparsers(
        dest="verb", required=True, parser_class=OneLineParser
    )
    add_drop = drop.add_parser("add", help="declare a drop folder (the poller service imports what appears in it)")
    add_drop.add_argument("name", help="Northanc's name for it, e.g. microscope1")
    add_drop.add_argument("path", help="the folder, absolute (a network mount is fine)")
    target = add_drop.add_mutually_exclusive_group(required=True)
    target.add_argument("--project", help="import everything into this project")
    target.add_argument("--routing", action="store_true", help="place each entry by the routing rules on tags")
    add_drop.add_argument("--stable-seconds", type=float, default=dropfolders.DEFAULT_STABLE_SECONDS,
                          help="how long a file must keep its size and mtime before it is imported (default %(default)g)")
    add_drop.add_argument("--keep", action="store_true", help="leave imported files in place (remembered) instead of moving them to done/")
    add_drop.add_argument("--subject", help="with --project: the subject of files with no DICOM beside them (default: the folder's name)")
    add_drop.add_argument("--study", help="with --project: their study (default: one per day, YYYYMMDD of the entry's newest file)")
    drop.add_parser("list", help="list the drop folders")
    drop.add_parser("remove", help="forget a drop folder (its files stay)").add_argument("name")
    add_workers_parser(areas)
    maintenance_commands.add_parsers(areas)
    return parser


def run_admin(archive: Archive, argv: Sequence[str], out: IO[str]) -> None:
    args = build_admin_parser().parse_args(list(argv))
    if args.area == "init":
        _init(archive, out)
        return
    if args.area == "compose":
        out.write(compose.render(compose.production_settings()))
        return
    if args.area in maintenance_commands.AREAS:
        maintenance_commands.AREAS[args.area](archive, args, out)
        return
    if args.area == "workers":
        run_admin_workers(archive, args, out)
        return
    archive.check_schema()
    if args.area in ("pacs", "sender"):
        {"pacs": _pacs, "sender": _sender}[args.area](archive, args, out)
        return
    if args.area == "dropfolder":
        with archive.unit_of_work() as (session, _journal):
            _dropfolder(session, archive, args, out)
        return
    user: Callable[[Session, argparse.Namespace, IO[str]], None] = functools.partial(_user, providers=archive.settings.identity)
    handler = {"user": user, "role": _role, "token": _token, "project": _project, "route": _route}[args.area]
    with archive.unit_of_work() as (session, _journal):
        handler(session, args, out)


def _init(archive: Archive, out: IO[str]) -> None:
    password = installation.initialise(archive)
    if password is None:
        out.write(f"archive ready at {archive.settings.archive_root} (schema {db.SCHEMA_REVISION})\n")
        return
    out.write(
        f"archive initialised at {archive.settings.archive_root}\n"
        f"first site admin: {installation.FIRST_ADMIN}\n"
        f"one-time password: {password}\n"
        "(shown only now; it must be changed at the first log-in)\n"
    )


def _user(session: Session, args: argparse.Namespace, out: IO[str], providers: IdentityProviders) -> None:
    if args.verb == "add" and args.provider:
        user = linking.precreate(session, args.username, providers.origin_of(args.provider), args.provider)
        user.is_site_admin = args.site_admin
        out.write(f"created user {user.username} for {linking.origin_label(user)}; it is linked at the first log-in there\n")
    elif args.verb == "add":
        user, password = accounts.create_user(session, args.username, args.site_admin)
        out.write(f"created user {user.username}; one-time password: {password}\n")
    elif args.verb == "list":
        for user in accounts.list_users(session):
            flags = [f for f, on in (("site-admin", user.is_site_admin), ("disabled", user.disabled)) if on]
            out.write(f"{user.username}\t{linking.origin_label(user)}\t{','.join(flags)}\n")
    elif args.verb == "show":
        for label, value in linking.describe(session, accounts.get_user(session, args.username)):
            out.write(f"{label}:\t{value}\n")
    elif args.verb == "passwd":
        out.write(f"new one-time password for {args.username}: {accounts.reset_password(session, args.username)}\n")
    elif args.verb == "unlock":
        accounts.unlock(session, args.username)
        out.write(f"log-ins to {args.username} are no longer slowed down\n")
    else:
        accounts.set_disabled(session, args.username, args.verb == "disable")
        out.write(f"{args.verb}d {args.username}\n")


def _role(session: Session, args: argparse.Namespace, out: IO[str]) -> None:
    if args.verb == "list":
        project = get_project(session, args.project) if args.project else None
        for username, project_name, role in accounts.list_roles(session, project):
            out.write(f"{username}\t{project_name}\t{role.value}\n")
        return
    user = accounts.get_user(session, args.username)
    project = get_project(session, args.project)
    if args.verb == "grant":
        role = accounts.parse_role(args.role)
        accounts.grant_role(session, user, project, role)
        out.write(f"{user.username} is {role.value} on {project.name}\n")
    else:
        accounts.revoke_role(session, user, project)
        out.write(f"{user.username} has no role on {project.name} now\n")


def _token(session: Session, args: argparse.Namespace, out: IO[str]) -> None:
    if args.verb == "create":
        user = accounts.get_user(session, args.username)
        issued = accounts.create_token(session, user, args.name, args.expires_days)
        out.write(f"token {issued.token.id} for {user.username} (shown only now): {issued.secret}\n")
    elif args.verb == "list":
        for token in accounts.list_tokens(session, accounts.get_user(session, args.username)):
            state = "revoked" if token.revoked_at else (f"expires {token.expires_at:%Y-%m-%d}" if token.expires_at else "active")
            out.write(f"{token.id}\t{token.prefix}...\t{token.name}\t{state}\n")
    else:
        token = accounts.revoke_token(session, args.token_id)
        out.write(f"revoked token {token.id}\n")


def _project(session: Session, args: argparse.Namespace, out: IO[str]) -> None:
    project = get_project(session, args.project)
    if args.verb == "set":
        projects.update_settings(
            project,
            description=args.description,
            pseudonymise=None if args.pseudonymise is None else args.pseudonymise == "yes",
            subject_template=args.subject_template,
            study_template=args.study_template,
            series_template=args.series_template,
            autoexec_batch=args.autoexec,
            default_queue=args.queue,
            generic_jobs_role=None if args.generic_jobs is None else Role(args.generic_jobs),
            job_network_allowed=None if args.job_network is None else args.job_network == "yes",
            bids_rules=None if args.bids_rules is None else (args.bids_rules and read_file_argument(args.bids_rules, "--bids-rules")),
        )
    for name, value in projects.settings_of(project).items():
        out.write(f"{name}\t{value}\n")


def _route(session: Session, args: argparse.Namespace, out: IO[str]) -> None:
    if args.verb == "add":
        rule = projects.add_route(session, get_project(session, args.project), args.aet, args.tag, args.pattern, args.position)
        if args.senders is not None:
            senders.set_rule_senders(session, rule, [name.strip() for name in args.senders.split(",") if name.strip()])
        out.write(f"added rule {rule.id}\n")
    elif args.verb == "remove":
        projects.remove_route(session, args.rule_id)
        out.write(f"removed rule {args.rule_id}\n")
    else:
        named = senders.rule_sender_names(session)
        for rule, name in projects.list_routes(session):
            what = f"aet={rule.called_aet}" if rule.called_aet else f"{rule.tag}~/{rule.pattern}/"
            who = ",".join(named.get(rule.id, [])) or "any sender"
            out.write(f"{rule.id}\t{rule.position}\t{what}\t-> {name}\tfrom {who}\n")


def _yes(flag: str | None) -> bool | None:
    return None if flag is None else flag == "yes"


def _pacs(archive: Archive, args: argparse.Namespace, out: IO[str]) -> None:
    orthanc = orthanc_for(archive.settings)
    if args.verb == "list":
        with archive.sessions() as session:
            for peer in peers.list_peers(session):
                out.write(f"{peer.name}\t{peer.aet}\t{peer.host}:{peer.port}\t{peer.retrieve.value}\t{peers.rights(peer)}\n")
        return
    if args.verb == "echo":
        with archive.sessions() as session:
            peer = peers.get_peer(session, args.name)
            peers.echo(orthanc, peer)
        out.write(f"{args.name} answered C-ECHO\n")
        return
    if args.verb == "remove":
        peers.remove_peer_registered(archive, orthanc, args.name)
        out.write(f"PACS {args.name} removed\n")
        return
    saved = peers.save_peer_registered(archive, orthanc, args.name, args.aet, args.host, args.port,
                                      RetrieveMethod(args.retrieve),
                                      replace=args.verb == "edit", allow_query=_yes(args.allow_query),
                                      allow_retrieve=_yes(args.allow_retrieve))
    with archive.sessions() as session:
        out.write(f"PACS {args.name} saved; it may {peers.rights(peers.get_peer(session, saved['name']))}\n")


def _sender(archive: Archive, args: argparse.Namespace, out: IO[str]) -> None:
    if args.verb == "list":
        with archive.sessions() as session:
            for sender in senders.list_senders(session):
                out.write(f"{sender.name}\t{sender.aet}\t{sender.host}\n")
        return
    orthanc = orthanc_for(archive.settings)
    if args.verb == "remove":
        senders.remove_sender(archive, orthanc, args.name)
        out.write(f"sender {args.name} removed\n")
        return
    added = senders.add_sender(archive, orthanc, args.name, args.aet, args.host)
    out.write(f"sender {added['name']} added: C-STORE from {added['aet']} at {added['host']}\n")


def _dropfolder(session: Session, archive: Archive, args: argparse.Namespace, out: IO[str]) -> None:
    if args.verb == "list":
        for folder in dropfolders.list_drop_folders(session):
            out.write(dropfolders.describe(folder) + "\n")
    elif args.verb == "remove":
        dropfolders.remove_drop_folder(session, args.name)
        out.write(f"drop folder {args.name} removed; its files stay where they are\n")
    else:
        folder = dropfolders.add_drop_folder(session, archive.settings, args.name, args.path, args.project, args.stable_seconds,
                                             DropAction.KEEP if args.keep else DropAction.MOVE, args.subject, args.study)
        out.write(f"drop folder added: {dropfolders.describe(folder)}\n")
