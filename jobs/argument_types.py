"""The types of a job's arguments and the letter their names start with (NORA's generic jobs)."""

from __future__ import annotations

import re
from enum import Enum


class ArgType(Enum):
    FILE = "FILE"
    OUT = "OUT"
    PATHOUT = "PATHOUT"
    STRING = "STRING"
    NUMERIC = "NUMERIC"
    LOGICAL = "LOGICAL"
    OPTION = "OPTION"


PREFIX = {
    ArgType.FILE: "f",
    ArgType.OUT: "o",
    ArgType.PATHOUT: "p",
    ArgType.STRING: "s",
    ArgType.NUMERIC: "n",
    ArgType.LOGICAL: "b",
    ArgType.OPTION: "c",
}
ARG_NAME = re.compile(r"([fopsnbc])([1-9])")
# Where a generic job's script uses an argument: $f1 or ${f1}.
SCRIPT_REFERENCE = re.compile(r"\$\{?([fopsnbc][1-9])\b")
