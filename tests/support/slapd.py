"""The suite's directory: Debian's OpenLDAP ``slapd``, started in a temporary directory.

One ``Slapd`` is a real server on free loopback ports: plain LDAP (StartTLS
offered), LDAPS and an ``ldapi://`` socket, with a certificate signed by a
test CA (``ca_path``).  ``DIRECTORY`` is loaded with ``slapadd`` before the
start: people in two OUs, a service account, groups (one nested in another),
an alias, and Active Directory style entries (``sAMAccountName``,
``userPrincipalName``; the attributes come from a small test schema, since
Debian's ``msuser.schema`` gives them no matching rules).

``shared()`` is one server for the whole session (never stopped by a test);
tests that stop or pause a directory start their own ``Slapd``.
"""

from __future__ import annotations

import atexit
import base64
import datetime
import hashlib
import ipaddress
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from qvd.pgcluster import port_in_use
from qvd.stream.sockets import free_port
from tests.support.processes import stop_popen

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMAS = "/etc/ldap/schema"
BASE = "dc=example,dc=com"
PEOPLE = f"ou=People,{BASE}"
STAFF = f"ou=Staff,{BASE}"
GROUPS = f"ou=Groups,{BASE}"
SERVICE_DN = f"cn=qvd-service,{BASE}"
SERVICE_PASSWORD = "service-secret"
START_TIMEOUT = 20.0

# login -> password of every person below (the same in both OUs where a uid repeats)
PASSWORDS = {
    "alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "dave": "dave-pw",
    "erin": "erin-pw", "frank": "frank-pw", "twin": "twin-pw", "Grace": "grace-pw",
}

AD_SCHEMA = """\
# Test-only: the two Active Directory naming attributes, with matching rules.
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.4203.666.11.99.1 NAME 'qvdTestADAccount' SUP top AUXILIARY
    MAY ( sAMAccountName $ userPrincipalName ) )
"""


def ssha(password: str) -> str:
    """``{SSHA}`` of ``password``, as slappasswd makes it."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def person(uid: str, ou: str, number: int, extra: str = "", password: str = "") -> str:
    """A person's LDIF (password: ``PASSWORDS[uid]`` unless given); ``extra`` lines go
    after the object classes (slapadd wants each attribute's values together)."""
    return (f"dn: uid={uid},{ou}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n{extra}"
            f"uid: {uid}\ncn: {uid.title()} Example\nsn: Example\nuidNumber: {number}\n"
            f"gidNumber: {number}\nhomeDirectory: /home/{uid.lower()}\n"
            f"userPassword: {ssha(password or PASSWORDS[uid])}\n\n")


def directory_ldif() -> str:
    """The test directory (passwords in ``PASSWORDS``)."""
    entries = [
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\n"
        "o: Example\n\n",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: People\n\n",
        f"dn: {STAFF}\nobjectClass: organizationalUnit\nou: Staff\n\n",
        f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: Groups\n\n",
        f"dn: ou=Aliases,{BASE}\nobjectClass: organizationalUnit\nou: Aliases\n\n",
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: qvd-service\nuserPassword: {ssha(SERVICE_PASSWORD)}\n\n",
        person("alice", PEOPLE, 10001),
        person("bob", PEOPLE, 10002, "objectClass: qvdTestADAccount\nsAMAccountName: bob\n"
                "userPrincipalName: bob@example.com\n"),
        person("carol", PEOPLE, 10003),
        person("dave", PEOPLE, 10004),
        person("Grace", PEOPLE, 10007),
        person("erin", STAFF, 10005),
        person("frank", STAFF, 10006),
        person("twin", PEOPLE, 10008),
        person("twin", STAFF, 10108),
        # an alias in ou=Aliases naming frank: found there only when aliases are dereferenced
        f"dn: uid=frank,ou=Aliases,{BASE}\nobjectClass: alias\nobjectClass: extensibleObject\n"
        f"uid: frank\naliasedObjectName: uid=frank,{STAFF}\n\n",
        f"dn: cn=desktop,{GROUPS}\nobjectClass: groupOfNames\ncn: desktop\n"
        f"member: uid=alice,{PEOPLE}\nmember: cn=staff-desktop,{GROUPS}\n\n",
        f"dn: cn=staff-desktop,{GROUPS}\nobjectClass: groupOfNames\ncn: staff-desktop\n"
        f"member: uid=erin,{STAFF}\n\n",
        f"dn: cn=others,{GROUPS}\nobjectClass: groupOfNames\ncn: others\n"
        f"member: uid=bob,{PEOPLE}\n\n",
    ]
    return "".join(entries)


def make_ca(directory: str) -> tuple[str, str, str]:
    """(CA certificate, server certificate, server key) paths: a test CA and a
    certificate it signed for localhost / 127.0.0.1."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qvd test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tuple(os.path.join(directory, n) for n in ("ca.pem", "server.pem", "server.key"))
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    os.chmod(paths[2], 0o600)
    return paths  # type: ignore[return-value]


class Slapd:
    """One slapd with its own data, ports and socket; ``start``/``stop``/``pause``.
    ``extra_ldif`` adds entries (the bench's people)."""

    def __init__(self, root: Optional[str] = None, extra_ldif: str = ""):
        self.root = root or tempfile.mkdtemp(prefix="qvd-test-slapd-")
        self.port = free_port()
        self.tls_port = free_port()
        self.socket = os.path.join(self.root, "ldapi")
        self.process: Optional[subprocess.Popen] = None
        self.ca_path, cert, key = make_ca(self.root)
        data = os.path.join(self.root, "data")
        os.makedirs(data, exist_ok=True)
        with open(os.path.join(self.root, "ad.schema"), "w") as f:
            f.write(AD_SCHEMA)
        self.conf = os.path.join(self.root, "slapd.conf")
        with open(self.conf, "w") as f:
            f.write(self._conf_text(data, cert, key))
        ldif = os.path.join(self.root, "directory.ldif")
        with open(ldif, "w") as f:
            f.write(directory_ldif() + extra_ldif)
        subprocess.run([SLAPADD, "-q", "-f", self.conf, "-l", ldif], check=True,
                       capture_output=True)

    def _conf_text(self, data: str, cert: str, key: str) -> str:
        includes = "".join(f"include {SCHEMAS}/{name}.schema\n"
                           for name in ("core", "cosine", "inetorgperson", "nis"))
        return (
            f"{includes}include {self.root}/ad.schema\n"
            f"pidfile {self.root}/slapd.pid\nargsfile {self.root}/slapd.args\n"
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
            f"TLSCACertificateFile {self.ca_path}\nTLSCertificateFile {cert}\n"
            f"TLSCertificateKeyFile {key}\n"
            "database mdb\nmaxsize 16777216\n"
            f'suffix "{BASE}"\nrootdn "cn=admin,{BASE}"\n'
            f"directory {data}\n"
            "index objectClass,uid,member,sAMAccountName,userPrincipalName eq\n"
            "access to attrs=userPassword by anonymous auth by * none\n"
            "access to * by * read\n"
        )

    # -- addresses ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://localhost:{self.tls_port}"

    @property
    def ldapi_url(self) -> str:
        return "ldapi://" + urllib.parse.quote(self.socket, safe="")

    # -- life --------------------------------------------------------------------------
    def start(self) -> "Slapd":
        urls = f"{self.url}/ ldaps://127.0.0.1:{self.tls_port}/ {self.ldapi_url}/"
        log = open(os.path.join(self.root, "slapd.log"), "ab")
        # -d 0: stay in the foreground (so this object owns the process), log nothing
        self.process = subprocess.Popen([SLAPD, "-f", self.conf, "-h", urls, "-d", "0"],
                                        stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not port_in_use(self.port) or not port_in_use(self.tls_port):
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.process.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"slapd not listening after {START_TIMEOUT}s: {self.log()}")
            time.sleep(0.02)  # a bounded wait on another process's socket
        return self

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGCONT)  # a paused slapd cannot exit
            stop_popen(self.process)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, slapd answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        with open(os.path.join(self.root, "slapd.log"), errors="replace") as f:
            return f.read()[-2000:]


_shared: Optional[Slapd] = None


def shared() -> Slapd:
    """The session's directory, started on first use and destroyed at exit."""
    global _shared
    if _shared is None:
        _shared = Slapd().start()
        atexit.register(_shared.destroy)
    return _shared


def started(testcase) -> Slapd:
    """A directory of the test's own (destroyed at cleanup), for tests that stop or pause it."""
    server = Slapd().start()
    testcase.addCleanup(server.destroy)
    return server


def dead_port() -> int:
    """A loopback port nothing listens on (a directory that is down)."""
    port = free_port()
    assert not port_in_use(port)
    return port
