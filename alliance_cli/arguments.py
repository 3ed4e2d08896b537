"""Parsing of command arguments shared by several command groups."""

from __future__ import annotations

from node.errors import InvalidInput


def parse_identifier_arguments(arguments: list[str]) -> list[tuple[str, str]]:
    """`TYPE=VALUE` arguments as (type, value) pairs; the values are normalised later, by the node."""
    identifiers = []
    # Counted from 0, as the node counts them in its refusals of a value ("identifier 1: invalid phone" is the
    # second): from 1 here, "identifier 2" named that same argument.
    for position, argument in enumerate(arguments):
        kind, separator, value = argument.partition("=")
        if not separator or not kind or not value:
            # By position, not quoted: an argument without its TYPE= is the customer's identifier itself.
            raise InvalidInput(f"identifiers are written TYPE=VALUE, e.g. phone=13800138000 (identifier {position} "
                               "is not)", code="malformed_identifier_argument")
        identifiers.append((kind.strip(), value))
    return identifiers
