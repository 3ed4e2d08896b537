"""Parsing of command arguments shared by several command groups."""

from __future__ import annotations

from node.errors import InvalidInput


def parse_identifier_arguments(arguments: list[str]) -> list[tuple[str, str]]:
    """`TYPE=VALUE` arguments as (type, value) pairs; the values are normalised later, by the node."""
    identifiers = []
    for argument in arguments:
        kind, separator, value = argument.partition("=")
        if not separator or not kind or not value:
            raise InvalidInput("identifiers are written TYPE=VALUE, e.g. phone=13800138000 "
                               f"(got {kind or argument!r}=…)", code="malformed_identifier_argument")
        identifiers.append((kind.strip(), value))
    return identifiers
