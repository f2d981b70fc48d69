"""``qa usage [command]``: qa4's built-in help, laid out as the manual prints it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

RULE = "=" * 75

GENERAL = {
    "usage": "retrieves instructions about the usage of the app",
    "login": "Intended to log in as a QVD administrator",
    "logout": "Intended to log out",
    "password": "Intended to change current QVD administrator password",
    "version": "Retrieves information about the QVD version the app is connected to",
    "log": "retrieves log entries about the QVD server activity",
}
OBJECTS = {
    "vm": "QVD virtual machines", "user": "QVD users", "host": "QVD hosts",
    "osf": "QVD OSFs", "di": "QVD disk images", "tenant": "QVD tenants",
    "role": "QVD roles", "acl": "QVD acls", "admin": "QVD administrators",
    "config": "QVD configuration",
}
API_ONLY = ("login", "logout", "password", "role", "acl", "admin")  # through the API only


def overview() -> str:
    lines = [RULE, " " * 25 + "AVAILABLE COMMANDS", RULE,
             "  For a specific explanation of the following commands run:",
             "  usage <COMMAND>", "  i.e. usage login", "",
             "== CLI GENERAL MANAGEMENT COMMANDS"]
    lines += [f"  {name} ({what}){_api(name)}" for name, what in GENERAL.items()]
    lines += ["", "== QVD OBJECTS COMMANDS"]
    lines += [f"   {name} (Intended to {what} management){_api(name)}"
              for name, what in OBJECTS.items()]
    return "\n".join(lines) + "\n"


def _api(name: str) -> str:
    return " [with --api]" if name in API_ONLY else ""


@dataclass(frozen=True)
class ObjectHelp:
    plural: str
    new: Optional[str]  # arguments of an example 'new', None: no 'new'
    fields: str  # fields of an example 'get'
    update: Optional[str]  # arguments of an example 'set'
    properties: bool = True
    block: bool = True
    extra: str = ""


HELP = {
    "vm": ObjectHelp("VMs", "name=myvm, user=myuser, osf=myosf", "name, id, ip",
                     "name=yourvm, di_tag=default", extra="""\
== EXECUTING VMs
  vm <FILTERS> start
  vm <FILTERS> stop
  vm <FILTERS> disconnect
  For example:
  vm start (Starts all VMs; those not stopped are reported, not started)
  vm name=myvm stop (Stop VM with name myvm)
  vm id=23 disconnect_user (Disconnects the user of VM 23)
== EXPIRATION
  vm <FILTERS> set expiration_soft=<DATE>, expiration_hard=<DATE>
  <DATE> as the command at takes it, or never:
  vm di_id=1000 set expiration_soft=now
  vm id=15 set expiration_soft=now + 2 hours, expiration_hard=tomorrow 18:00
"""),
    "user": ObjectHelp("users", "name=myuser, password=mypassword", "name, id",
                       "password=newpassword", extra="""\
== SECOND FACTOR
  user <FILTERS> totp new (Enrols one user: secret, otpauth:// URI and QR code)
  user <FILTERS> totp del
"""),
    "host": ObjectHelp("hosts", "name=myhost, address=10.3.15.1", "name, id, address",
                       "address=10.3.15.2", extra="""\
  host get shows each host's counters too: http_requests, auth_attempts, auth_ok,
  nx_attempts, nx_ok and short_sessions.
"""),
    "osf": ObjectHelp("OSFs", "name=myosf", "name, id, memory", "memory=512"),
    "di": ObjectHelp("DIs", "disk_image=mydi.tar.gz, osf=myosf", "disk_image, id, tags",
                     "description=mine", extra="""\
== TAGGING DIs
  di <FILTERS> tag <TAG>, <TAG>, ...
  di <FILTERS> untag <TAG>, <TAG>, ...
  For example:
  di disk_image=mydi tag default, head, mytag
"""),
    "tenant": ObjectHelp("tenants", "name=mytenant", "name, id", "description=ours",
                         properties=False),
    "config": ObjectHelp("configuration tokens", None, "key, value", None, properties=False,
                         block=False, extra="""\
== SETTING CONFIGURATION TOKENS
  config set [tenant_id=<ID>,] key=<KEY>, value=<VALUE>
  config set [tenant_id=<ID>,] key=<KEY> default (Back to its default value)
  config key=<KEY> del
  config ssl key=<FILE>, cert=<FILE> [, ca=<FILE>] [, crl=<FILE>]
  For example:
  config set tenant_id=-1,key=myproperty,value="this is a value"
"""),
    "log": ObjectHelp("log entries", None, "time, admin_name, action, object_name, status",
                      None, properties=False, block=False, extra="""\
  Every login, connect and disconnect of users (source L7R) and every change made
  with qa (source CLI) or the API leaves an entry; passwords and tokens never do.
  For example:
  log "qvd_object=vm,action=vm_connect" get
  log "status!=0" get order desc id
"""),
}
GENERAL_HELP = {
    "usage": "usage\n  usage <COMMAND>\n  (The general help, or the help of one command)\n",
    "version": "version\n  (Prints the version of the QVD-DB schema qa works on)\n",
    "login": "login\n  qa --api <URL> [-l <ADMIN>] [-t <TENANT>] login\n"
             "  (Asks for what is missing and keeps the session for the next commands)\n",
    "logout": "logout\n  qa --api <URL> logout\n",
    "password": "password\n  qa --api <URL> password [<NEW PASSWORD>]\n",
    "role": "role <FILTERS> get | assign acl <ACL> | assign role <ROLE> (with --api)\n",
    "acl": "acl <FILTERS> get (with --api)\n",
    "admin": "admin new name=<NAME>, password=<PASSWORD> | admin <FILTERS> assign role <ROLE>"
             " | admin <FILTERS> can <ACL PATTERN> (with --api)\n",
}
FILTERS = """\
DEFAULT FILTERS
  The filter key 'name', and the operator '=' are considered as defaults. So the following
  is a right syntax:
  <QVD OBJECT COMMAND> <QVD OBJECT NAME> <ACTION COMMAND>
  For example:
  vm myVM get (Equal to vm name=myVM get)
COMPLEX FILTERS
  = != < > <= >= and ~ (the SQL LIKE operator); key1=[1, 2, 3] (one of them),
  key1=[1:3] (between 1 and 3); values with blanks must be quoted.
  , (AND)  ; (OR)  ! (NOT); group filters with '(' and ')'.
  For example:
  vm "user~qvd%,state=stopped,user_state=disconnected" get
"""


def _object_usage(name: str, item: ObjectHelp) -> str:
    title = name.upper()
    many = f"{title}s"
    parts = [f"{title} COMMAND USAGE"]
    if item.new is not None:
        parts.append(f"== CREATING A NEW {title}\n  {name} new <ARGUMENTS>\n  For example:\n"
                     f"  {name} new {item.new}")
    parts.append(
        f"== GETTING {many}\n  {name} get\n  {name} <FILTERS> get\n"
        f"  {name} <FILTERS> get <FIELDS TO RETRIEVE>\n  For example:\n"
        f"  {name} get (retrieves default fields of all {item.plural})\n"
        f"  {name} <FILTERS> get {item.fields}\n"
        f"  Ordering:\n  {name} ... order [asc|desc] <ORDER CRITERIA>")
    if item.update is not None:
        parts.append(f"== UPDATING {many}\n  {name} <FILTERS> set <ARGUMENTS>\n"
                     f"  For example:\n  {name} <FILTERS> set {item.update}")
    if item.properties:
        parts.append(f"  Custom properties:\n  {name} <FILTERS> set property key=value, ...\n"
                     f"  {name} <FILTERS> get property\n  {name} <FILTERS> del property key, ...")
    if item.block:
        parts.append(f"== BLOCKING/UNBLOCKING {many}\n  {name} <FILTERS> block\n"
                     f"  {name} <FILTERS> unblock")
    if item.new is not None:
        parts.append(f"== REMOVING {many}\n  {name} <FILTERS> del")
    return "\n".join(parts) + "\n" + item.extra + FILTERS


def usage(command: Optional[str] = None) -> str:
    """The overview, or the help of ``command``; ``ValueError`` for an unknown one."""
    if command is None:
        return overview()
    if command in HELP:
        return _object_usage(command, HELP[command])
    if command in GENERAL_HELP:
        return GENERAL_HELP[command]
    raise ValueError(f"no usage for {command!r}: run 'qa usage' for the list of commands")
