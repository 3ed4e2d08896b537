"""Normalisation of customer identifiers into the canonical form that is hashed and shared.

Members only learn that they hold the same identifier when their keyed hashes match, so every node must
turn every way of writing one identifier into byte-identical text, and must refuse what it cannot
interpret instead of guessing: a guessed value would attach a fraud indicator to an innocent person.

Every input is first put through Unicode NFKC, so full-width digits, letters and punctuation typed with
a Chinese input method read as their ASCII forms, then stripped of surrounding whitespace.

Reason codes carried by `InvalidIdentifier.code` (stable and machine-readable):

- ``unknown_type``: the identifier type is not an `IdentifierType` value.
- ``too_long``: the raw input is longer than `MAX_RAW_LENGTH` characters. Checked before anything
  else is done with the input, so hostile input cannot make normalisation expensive.
- ``empty``: the input is blank.
- ``bad_format``: a character or structure the type does not allow.
- ``bad_length``: the number of characters or digits is impossible for the type (including legacy
  15-digit resident IDs, and phone numbers too short or too long for their region's numbering plan).
- ``checksum_failed``: the check character does not match (resident ID, USCC, bank card).
- ``invalid_date``: the birth date in a resident ID does not exist or is after today in China.
- ``invalid_region``: a resident ID whose first six digits are not an administrative division code
  known to python-stdnum, or a phone number whose country calling code is unassigned or which lies
  outside the allocated ranges of its region's numbering plan (validity there is decided per region).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum
from functools import lru_cache, partial
from typing import Literal

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, ValidationResult
from stdnum import luhn, numdb
from stdnum.cn import ric, uscc
from stdnum.exceptions import InvalidChecksum, InvalidFormat, InvalidLength

MAX_RAW_LENGTH = 256


class IdentifierType(StrEnum):
    CN_RESIDENT_ID = "cn_resident_id"
    USCC = "uscc"
    PHONE = "phone"
    BANK_CARD = "bank_card"
    EMAIL = "email"
    DEVICE_ID = "device_id"
    IP = "ip"


_TYPE_NAMED: dict[str, IdentifierType] = {kind.value: kind for kind in IdentifierType}


class ReasonCode(StrEnum):
    UNKNOWN_TYPE = "unknown_type"
    TOO_LONG = "too_long"
    EMPTY = "empty"
    BAD_FORMAT = "bad_format"
    BAD_LENGTH = "bad_length"
    CHECKSUM_FAILED = "checksum_failed"
    INVALID_DATE = "invalid_date"
    INVALID_REGION = "invalid_region"


class InvalidIdentifier(ValueError):
    """An identifier that cannot be normalised.

    The message never quotes the input: it is personal data and error messages end up in logs.
    """

    def __init__(self, identifier_type: str, code: ReasonCode, reason: str) -> None:
        # All three go to args so the exception survives pickling between worker processes.
        super().__init__(identifier_type, code, reason)
        self.identifier_type = identifier_type
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        if self.code == ReasonCode.UNKNOWN_TYPE:  # the type given may be the value itself (swapped columns)
            return f"unknown identifier type ({self.code}): {self.reason}"
        return f"invalid {self.identifier_type} ({self.code}): {self.reason}"


@dataclass(frozen=True, slots=True)
class ResidentIdFacts:
    birth_date: date
    region_code: str
    sex: Literal["M", "F"]


def normalise(identifier_type: str | IdentifierType, raw: str) -> str:
    """Return the canonical form of `raw`, or raise `InvalidIdentifier`."""
    # A dict, not IdentifierType(...): a batch check asks 10,000 times.
    kind = _TYPE_NAMED.get(identifier_type) if isinstance(identifier_type, str) else None
    if kind is None:
        raise InvalidIdentifier(
            str(identifier_type), ReasonCode.UNKNOWN_TYPE,
            f"identifier type must be one of: {', '.join(IdentifierType)}",
        )
    if len(raw) > MAX_RAW_LENGTH:
        raise InvalidIdentifier(kind, ReasonCode.TOO_LONG, f"input exceeds {MAX_RAW_LENGTH} characters")
    text = unicodedata.normalize("NFKC", raw).strip()
    if not text:
        raise InvalidIdentifier(kind, ReasonCode.EMPTY, "input is blank")
    return _NORMALISERS[kind](text)


def resident_id_facts(resident_id: str) -> ResidentIdFacts:
    """Birth date, region code and sex encoded in a resident ID (validated first, in any accepted form)."""
    canonical = normalise(IdentifierType.CN_RESIDENT_ID, resident_id)
    # The order code (digits 15-17) is odd for men and even for women.
    sex: Literal["M", "F"] = "M" if int(canonical[16]) % 2 else "F"
    return ResidentIdFacts(birth_date=ric.get_birth_date(canonical), region_code=canonical[:6], sex=sex)


_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212"
_ASCII_DIGITS = re.compile(r"[0-9]+")
_CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")


# For str patterns \s is exactly str.isspace() (both are CPython's Py_UNICODE_ISSPACE).
_SEPARATORS = re.compile(f"[\\s{re.escape(_DASHES)}]+")


def _without_separators(text: str) -> str:
    return _SEPARATORS.sub("", text)


def _today_in_china() -> date:
    # Resident ID birth dates are days in China; the server's UTC day lags by up to 8 hours and would
    # reject a baby registered early in the morning.
    return datetime.now(_CHINA_STANDARD_TIME).date()


def day_in_china(unix_seconds: int) -> date:
    """The calendar day in China at `unix_seconds`: what a resident ID's birth date is compared with."""
    return datetime.fromtimestamp(unix_seconds, _CHINA_STANDARD_TIME).date()


def _normalise_resident_id(text: str) -> str:
    invalid = partial(InvalidIdentifier, IdentifierType.CN_RESIDENT_ID)
    number = _without_separators(text).upper()
    # stdnum.cn.ric.validate is not used as a whole: it rejects genuine IDs whose district was created
    # after the holder's birth year (IDs carry the district of first registration, often years after
    # birth: every Pudong 310115 ID of someone born before 1992), and it raises KeyError for a known
    # province with an unknown district. Its parts are used in its order: length, format, checksum.
    if len(number) != 18:
        raise invalid(ReasonCode.BAD_LENGTH, "resident ID must have 18 characters")
    if not _ASCII_DIGITS.fullmatch(number[:17]) or number[17] not in "0123456789X":
        raise invalid(ReasonCode.BAD_FORMAT, "resident ID must be 17 digits and a digit or X")
    if ric.calc_check_digit(number) != number[17]:
        raise invalid(ReasonCode.CHECKSUM_FAILED, "check digit does not match the 17 digits")
    try:
        # What ric.get_birth_date does after re-cleaning the number, which is already clean here.
        birth_date = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise invalid(ReasonCode.INVALID_DATE, "birth date does not exist") from None
    if birth_date > _today_in_china():
        raise invalid(ReasonCode.INVALID_DATE, "birth date is in the future")
    if not _is_known_division(number[:6]):
        raise invalid(ReasonCode.INVALID_REGION, "region code is not a known division code")
    return number


@lru_cache(maxsize=65_536)  # a pure function of six digits; about 3,500 real codes, so nearly all hits
def _is_known_division(region_code: str) -> bool:
    # A code that existed in any period counts: IDs keep their code after a district is abolished.
    return any("county" in props for _, props in numdb.get("cn/loc").info(region_code))


def _normalise_uscc(text: str) -> str:
    invalid = partial(InvalidIdentifier, IdentifierType.USCC)
    try:
        return uscc.validate(_without_separators(text))
    except InvalidLength:  # before InvalidFormat, which it subclasses
        raise invalid(ReasonCode.BAD_LENGTH, "USCC must have 18 characters") from None
    except InvalidFormat:
        raise invalid(ReasonCode.BAD_FORMAT, "need 8 digits, then 10 of 0-9, A-Y but not I O S V") from None
    except InvalidChecksum:
        raise invalid(ReasonCode.CHECKSUM_FAILED, "check character does not match") from None


# Letters are refused because phonenumbers reads them as keypad letters ("138OO..." with the letter O
# would become a different, valid number) or as extension markers, which it silently drops.
_PHONE_CHARACTERS = re.compile(r"[0-9+().]+")
_CN_METADATA = PhoneMetadata.metadata_for_region("CN")
assert _CN_METADATA is not None and _CN_METADATA.general_desc is not None and _CN_METADATA.mobile is not None
_CN_MOBILE_INPUT = re.compile(r"(?:\+86)?(1[3-9]\d{9})")
_CN_GENERAL = re.compile(str(_CN_METADATA.general_desc.national_number_pattern))
_CN_MOBILE_RANGES = re.compile(str(_CN_METADATA.mobile.national_number_pattern))
_PHONE_PARSE_LENGTH_ERRORS = frozenset({
    NumberParseException.TOO_SHORT_AFTER_IDD,
    NumberParseException.TOO_SHORT_NSN,
    NumberParseException.TOO_LONG,
})
_PHONE_LENGTH_RESULTS = frozenset(
    {ValidationResult.TOO_SHORT, ValidationResult.TOO_LONG, ValidationResult.INVALID_LENGTH}
)


def _normalise_phone(text: str) -> str:
    invalid = partial(InvalidIdentifier, IdentifierType.PHONE)
    compact = _without_separators(text)
    if not _PHONE_CHARACTERS.fullmatch(compact):
        raise invalid(ReasonCode.BAD_FORMAT, "only digits, spaces, hyphens, dots, + and () are allowed")
    mobile = _CN_MOBILE_INPUT.fullmatch(compact)
    if mobile and _CN_GENERAL.fullmatch(mobile.group(1)) and _CN_MOBILE_RANGES.fullmatch(mobile.group(1)):
        # What the full path returns for a Chinese mobile number written nationally or as +86, in a
        # tenth of the time: phonenumbers would keep these 11 digits as the national number (CN's
        # national-prefix rule only strips a leading 0, 11xx, 12xx or 179xx, none of which the
        # mobile ranges start with) and find them valid because they match the mobile pattern of
        # its own CN metadata. Everything else takes the full path.
        return "+86" + mobile.group(1)
    try:
        number = phonenumbers.parse(compact, "CN")
    except NumberParseException as exc:
        if exc.error_type in _PHONE_PARSE_LENGTH_ERRORS:
            raise invalid(ReasonCode.BAD_LENGTH, "phone number is too short or too long") from None
        if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
            raise invalid(ReasonCode.INVALID_REGION, "country calling code is not assigned") from None
        raise invalid(ReasonCode.BAD_FORMAT, "input is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        if phonenumbers.is_possible_number_with_reason(number) in _PHONE_LENGTH_RESULTS:
            raise invalid(ReasonCode.BAD_LENGTH, "digit count is impossible in its region's plan")
        raise invalid(ReasonCode.INVALID_REGION, "not an allocated number in its region's plan")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _normalise_bank_card(text: str) -> str:
    invalid = partial(InvalidIdentifier, IdentifierType.BANK_CARD)
    digits = _without_separators(text)
    if not 12 <= len(digits) <= 19:
        raise invalid(ReasonCode.BAD_LENGTH, "card number must have 12 to 19 digits")
    if not _ASCII_DIGITS.fullmatch(digits):
        raise invalid(ReasonCode.BAD_FORMAT, "card number may only contain digits")
    if luhn.checksum(digits) != 0:  # the digits are already clean: skip is_valid's second clean-up pass
        raise invalid(ReasonCode.CHECKSUM_FAILED, "Luhn check digit does not match")
    return digits


# RFC 5322 dot-atom: quoted local parts and non-ASCII (SMTPUTF8) local parts are refused because
# providers interpret them inconsistently, so no canonical form can be promised for them.
_EMAIL_LOCAL_PART = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")


def _normalise_email(text: str) -> str:
    # The whole address is lowercased because practically every provider ignores case, but dots and
    # +tags are kept: only some providers ignore them, and removing them for all would merge the
    # mailboxes of different people.
    invalid = partial(InvalidIdentifier, IdentifierType.EMAIL)
    address = text.lower()
    if address.count("@") != 1:
        raise invalid(ReasonCode.BAD_FORMAT, "email address must contain exactly one @")
    local, _, domain = address.partition("@")
    if len(local) > 64:
        raise invalid(ReasonCode.BAD_LENGTH, "local part is longer than 64 characters")
    if not _EMAIL_LOCAL_PART.fullmatch(local):
        raise invalid(ReasonCode.BAD_FORMAT, "local part must be ASCII dot-atom text")
    # The stdlib codec implements IDNA 2003 with tables frozen at Unicode 3.2, so every node converts a
    # given domain the same way whatever its Python version.
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise invalid(ReasonCode.BAD_FORMAT, "domain cannot be IDNA-encoded") from None
    if len(ascii_domain) > 253:
        raise invalid(ReasonCode.BAD_LENGTH, "domain is longer than 253 characters")
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise invalid(ReasonCode.BAD_FORMAT, "domain must be 2+ labels of a-z, 0-9, inner hyphens")
    return f"{local}@{ascii_domain}"


_DEVICE_ID = re.compile(r"[a-z0-9:_.-]+")


def _normalise_device_id(text: str) -> str:
    invalid = partial(InvalidIdentifier, IdentifierType.DEVICE_ID)
    value = text.lower()
    if not 8 <= len(value) <= 128:
        raise invalid(ReasonCode.BAD_LENGTH, "device ID must have 8 to 128 characters")
    if not _DEVICE_ID.fullmatch(value):
        raise invalid(ReasonCode.BAD_FORMAT, "device ID may only contain a-z, 0-9 and : _ . -")
    # SDKs print UUIDs with or without hyphens or a urn:uuid: prefix; one device must hash the same.
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value


def _normalise_ip(text: str) -> str:
    invalid = partial(InvalidIdentifier, IdentifierType.IP)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise invalid(ReasonCode.BAD_FORMAT, "not an IPv4 or IPv6 address (no prefix length)") from None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            raise invalid(ReasonCode.BAD_FORMAT, "IPv6 zone IDs are not allowed")
        # A dual-stack server logs IPv4 clients as ::ffff:a.b.c.d; it is the same client.
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
    return str(address)


_NORMALISERS: dict[IdentifierType, Callable[[str], str]] = {
    IdentifierType.CN_RESIDENT_ID: _normalise_resident_id,
    IdentifierType.USCC: _normalise_uscc,
    IdentifierType.PHONE: _normalise_phone,
    IdentifierType.BANK_CARD: _normalise_bank_card,
    IdentifierType.EMAIL: _normalise_email,
    IdentifierType.DEVICE_ID: _normalise_device_id,
    IdentifierType.IP: _normalise_ip,
}
