#!/usr/bin/env python3
"""Writes the top-level standard library module names of Python 3.8 to 3.14, one file each.

    pip install stdlib-list==0.12.0   # in a throwaway venv
    python generate.py                # rewrites 3.8.txt .. 3.14.txt beside this file

Names come from stdlib-list (the documented modules of each version), united with
`sys.stdlib_module_names` (3.10+, includes the private and platform modules) of every
`pythonX.Y` found on PATH; before 3.10, with the builtin modules and what the interpreter's
standard library directories hold. Conda build artifacts (`lib`, `_sysconfigdata_*conda*`)
are dropped: a project module called `lib` is not the standard library. Only the first component of each name is kept: detection asks
whether the top-level name of an import is the standard library's.
"""

import json
import os
import subprocess
import sys

from stdlib_list import stdlib_list

VERSIONS = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14"]
HERE = os.path.dirname(os.path.abspath(__file__))


def from_interpreter(version):
    """sys.stdlib_module_names of pythonX.Y, or nothing without it (or before 3.10)."""
    code = (
        "import sys, json, pkgutil, sysconfig, os\n"
        "names = set(getattr(sys, 'stdlib_module_names', ()))\n"
        "if not names:\n"
        "    stdlib = sysconfig.get_paths()['stdlib']\n"
        "    dirs = [stdlib, os.path.join(stdlib, 'lib-dynload')]\n"
        "    names = set(sys.builtin_module_names) | {m.name for m in pkgutil.iter_modules(dirs)}\n"
        "    names -= {'site-packages', 'dist-packages'}\n"
        "print(json.dumps(sorted(names)))\n"
    )
    try:
        out = subprocess.run([f"python{version}", "-I", "-c", code], capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return set()
    return set(json.loads(out))


def main():
    for version in VERSIONS:
        names = {name.split(".")[0] for name in stdlib_list(version)}
        names |= from_interpreter(version)
        names = {n for n in names if n and n != "lib" and "conda" not in n}
        path = os.path.join(HERE, f"{version}.txt")
        with open(path, "w") as f:
            f.write("".join(f"{n}\n" for n in sorted(names)))
        print(f"{path}: {len(names)} names", file=sys.stderr)


if __name__ == "__main__":
    main()
