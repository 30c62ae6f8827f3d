"""login and logout: the daemon checks the credentials, we keep them in config.json."""

from __future__ import annotations

import sys

from skiff.cli import credentials
from skiff.cli.exits import UsageError
from skiff.cli.parsing import parser

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from skiff.cli.main import Cli


def registry_auth_header(server: str) -> str:
    return credentials.encode_header(credentials.lookup(credentials.config_path(), server))


def cmd_login(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff login", "Log in to a registry")
    p.add_argument("-u", "--username", default="")
    p.add_argument("-p", "--password", default="")
    p.flag("--password-stdin")
    p.add_argument("server", nargs="?", default="")
    args = p.parse(argv)
    password = args.password
    if args.password_stdin:
        if args.password:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        if not args.username:
            raise UsageError("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    username = args.username
    if not username:
        sys.stdout.write("Username: ")
        sys.stdout.flush()
        username = sys.stdin.readline().strip()
    if not password:
        import getpass

        password = getpass.getpass("Password: ")
    if args.password:
        sys.stderr.write("WARNING! Using --password via the CLI is insecure. "
                         "Use --password-stdin.\n")
    if not username or not password:
        raise UsageError("Error: Username and password are required")
    server = args.server or credentials.HUB_KEY
    result = cli.client.post("/auth", None, {"username": username, "password": password,
                                             "serveraddress": server}) or {}
    path = credentials.config_path()
    credentials.store(path, server, username, password, result.get("IdentityToken") or "")
    sys.stdout.write(f"{result.get('Status') or 'Login Succeeded'}\n")
    return 0


def cmd_logout(cli: Cli, argv: list[str]) -> int:
    p = parser("skiff logout", "Log out from a registry")
    p.add_argument("server", nargs="?", default="")
    args = p.parse(argv)
    server = args.server or credentials.HUB_KEY
    if credentials.erase(credentials.config_path(), server):
        print(f"Removing login credentials for {credentials.server_key(server)}")
    else:
        print(f"Not logged in to {credentials.server_key(server)}")
    return 0
