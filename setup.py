"""The optional compiled helper, vsrtel._speedups; everything else is in pyproject.toml.

The extension is optional: where it cannot be built (no C compiler, no Python headers) setuptools
warns and installs vsrtel as pure Python, which behaves the same. It is not built on other
interpreters than CPython, nor when the environment variable VSRTEL_PURE_PYTHON is set to
anything but "" or "0" (the variable also turns the helper off at import: see vsrtel/_views.py).
"""

from __future__ import annotations

import os
import platform
import sysconfig

from setuptools import Extension, setup

ext_modules: list[Extension] = []
options: dict[str, dict[str, str]] = {}

pure = os.environ.get("VSRTEL_PURE_PYTHON", "") not in ("", "0")
if not pure and platform.python_implementation() == "CPython":
    # The stable ABI of 3.10 makes one binary for every later CPython; free-threaded builds
    # have no stable ABI, so they get a binary of their own version.
    limited = not sysconfig.get_config_var("Py_GIL_DISABLED")
    ext_modules.append(
        Extension(
            "vsrtel._speedups",
            ["vsrtel/_speedups.c"],
            optional=True,
            py_limited_api=limited,
            define_macros=[("Py_LIMITED_API", "0x030A0000")] if limited else [],
        )
    )
    if limited:
        options["bdist_wheel"] = {"py_limited_api": "cp310"}

setup(ext_modules=ext_modules, options=options)
