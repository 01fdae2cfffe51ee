"""Prototypes of the config's validation with pydantic and with msgspec, for bench/config_validation.py only.

Not production code and not imported by hotfolder. They need pydantic and msgspec, which are not
project dependencies: install them into a venv of their own (see bench/config_validation.py).
"""
