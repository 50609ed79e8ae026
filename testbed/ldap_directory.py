"""Debian's slapd for the tests: a throw-away directory with users and groups, over LDAPS and StartTLS.

Everything lives in a temporary folder: a CA and a server certificate made here (the client is
given the CA), slapd.conf, an MDB database loaded with slapadd, and the server on two free
ports (ldaps:// and ldap:// with StartTLS). Users can bind as themselves and read the tree;
anonymous clients can only authenticate.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import secrets
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nifti_archive.waiting import wait_until
from testbed.children import stop_child
from testbed.ports import free_port

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SUFFIX = "dc=example,dc=org"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
START_SECONDS = 20.0


@dataclass(frozen=True)
class Person:
    uid: str
    password: str
    groups: tuple[str, ...] = ()

    @property
    def dn(self) -> str:
        return f"uid={self.uid},{PEOPLE}"


def _ssha(password: str) -> str:
    salt = secrets.token_bytes(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificates(folder: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 signed by it; returns the CA's PEM file."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("test directory CA")).issuer_name(_name("test directory CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return folder / "ca.pem"


def _ldif(people: tuple[Person, ...]) -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people",
        f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups",
    ]
    for person in people:
        entries.append(f"dn: {person.dn}\nobjectClass: inetOrgPerson\nuid: {person.uid}\ncn: {person.uid}\n"
                       f"sn: {person.uid}\nuserPassword: {_ssha(person.password)}")
    for group in sorted({group for person in people for group in person.groups}):
        members = "".join(f"\nmember: {person.dn}" for person in people if group in person.groups)
        entries.append(f"dn: cn={group},{GROUPS}\nobjectClass: groupOfNames\ncn: {group}{members}")
    return "\n\n".join(entries) + "\n"


def _config(folder: Path) -> str:
    return f"""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {folder}/slapd.pid
TLSCACertificateFile {folder}/ca.pem
TLSCertificateFile {folder}/server.pem
TLSCertificateKeyFile {folder}/server.key
database mdb
suffix "{SUFFIX}"
rootdn "cn=admin,{SUFFIX}"
directory {folder}/db
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by * none
"""


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Directory:
    folder: Path
    ca_file: Path
    ldaps_port: int
    ldap_port: int
    process: subprocess.Popen[bytes]

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def ldap_url(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    def stop(self) -> None:
        stop_child(self.process)


def start_directory(folder: Path, people: tuple[Person, ...]) -> Directory:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "db").mkdir()
    ca_file = _certificates(folder)
    (folder / "slapd.conf").write_text(_config(folder))
    (folder / "data.ldif").write_text(_ldif(people))
    subprocess.run([SLAPADD, "-q", "-f", str(folder / "slapd.conf"), "-l", str(folder / "data.ldif")],
                   check=True, capture_output=True)
    ldaps_port, ldap_port = free_port(), free_port()
    urls = f"ldaps://127.0.0.1:{ldaps_port}/ ldap://127.0.0.1:{ldap_port}/"
    log = (folder / "slapd.log").open("wb")
    # -d keeps slapd in the foreground, as our child; its log level 0 keeps the log to errors.
    process = subprocess.Popen([SLAPD, "-d", "0", "-f", str(folder / "slapd.conf"), "-h", urls],
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        wait_until(lambda: process.poll() is None and _accepts(ldaps_port) and _accepts(ldap_port), START_SECONDS,
                   f"slapd listening (log: {folder / 'slapd.log'})")
    except Exception:
        stop_child(process)
        raise
    return Directory(folder, ca_file, ldaps_port, ldap_port, process)
