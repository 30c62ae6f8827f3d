"""Container ids and names: Docker's formats and rules."""

from __future__ import annotations

import re
import secrets

from skiff.errors import InvalidArgument

_VALID = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_LEFT = ("brave", "calm", "eager", "fond", "jolly", "keen", "lucid", "merry", "nimble", "quiet",
         "sharp", "stoic", "tender", "vivid", "wise", "zen")
_RIGHT = ("albatross", "cormorant", "dinghy", "ferry", "gull", "heron", "keel", "mast", "oar",
          "pelican", "rudder", "schooner", "sloop", "tern", "wherry", "yawl")


def new_id() -> str:
    return secrets.token_hex(32)


def random_name() -> str:
    return f"{secrets.choice(_LEFT)}_{secrets.choice(_RIGHT)}_{secrets.token_hex(2)}"


def check_name(name: str) -> str:
    """The name without its leading "/", or InvalidArgument with Docker's message."""
    if not _VALID.match(name):
        raise InvalidArgument(f"Invalid container name ({name}), only "
                              "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name.removeprefix("/")
