"""What counts as an email address, and the one form addresses are matched in.

Every door that takes an address (a trigger, a suppression, an unsubscribe, a
GDPR erase, a bounce, a complaint, an ESP webhook) checks it here and matches
it by ``address_key``, so ``Ana@Пример.РФ``, ``ana@пример.рф`` and
``ana@xn--e1afmkfd.xn--p1ai`` are one person everywhere. The rule:

- **domain**: IDNA 2008 A-labels with the UTS 46 mapping (lower case, full-width
  forms folded), no trailing dot: what DNS and the SMTP envelope use;
- **local part**: Unicode NFC (RFC 6532 3.1), lower-cased. RFC 5321 lets a
  server tell ``Ana`` from ``ana``; no mailbox provider does, and a
  suppression that missed a capital letter would mail someone who asked us
  not to. Nothing else is folded (no dots or ``+tags`` removed): those are
  different mailboxes at some providers.

The address stored and sent is the one the caller gave (normalised by
email-validator: NFC, the domain as U-labels); only matching uses the key.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

import idna
from django.core.exceptions import ValidationError
from email_validator import EmailNotValidError, validate_email

from controlplane.errors import ServiceError

# RFC 5321 4.5.3.1.1: a local part is at most 64 octets; 4.5.3.1.3: a path at most 256, so an address 254 without
# its angle brackets. email-validator checks the whole only; a server refuses a longer local part with a 5xx that
# reads as the recipient's bounce. Octets of UTF-8: that is what goes out over SMTPUTF8.
LOCAL_PART_OCTETS = 64
ADDRESS_OCTETS = 254
# Longer than any address: a key of such text is only ever compared, never sent, so it is not worth the IDNA work.
_KEYED_CHARS = 1024


def address_key(address: str) -> str:
    """The form addresses are matched in (module docstring). Total: any text gets a key, nothing raises."""
    text = unicodedata.normalize("NFC", address.strip()) if not address.isascii() else address.strip()
    local, at, domain = text.rpartition("@")
    if not at:
        return text.lower()
    return f"{local.lower()}@{_domain_key(domain)}"


def _domain_key(domain: str) -> str:
    domain = domain.rstrip(".")
    if domain.isascii() or len(domain) > _KEYED_CHARS:
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        pass
    try:  # IDNA 2003, which still maps some names IDNA 2008 refuses (symbols, some scripts' joiners)
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return domain.lower()  # not a domain name at all: compared as given


def address_hash(address: str) -> str:
    """How stored rows find an address without keeping it (suppressions outlive an erase): SHA-256 of its key."""
    return hashlib.sha256(address_key(address).encode("utf-8", "surrogatepass")).hexdigest()


def hash_label(digest: str) -> str:
    """How the audit trail names an address: by hash, never in clear (entries outlive a GDPR erase)."""
    return f"sha256:{digest[:12]}"


# Anything shaped like an address in free text: a run of characters no address delimiter breaks, an "@", a
# domain with a dot. A match starts only where a run starts and its runs are possessive, so text is read once.
_DELIMITERS = r"\s<>\"'(),;:\[\]"
_MENTION = re.compile(rf"(?<![^{_DELIMITERS}])[^{_DELIMITERS}@]++@[^{_DELIMITERS}@]++")


def addresses_redacted(value: Any, *, own_domain: str = "") -> Any:
    """``value`` (text, or JSON made of dicts, lists and text) with every address in it replaced by its hash label.

    For records kept longer than any person's data may be (the audit trail):
    what they say stays readable and an entry can still be tied to an address
    one already knows, but they never hold one in clear for an erase to miss.
    Addresses at ``own_domain`` (a sending domain's own sender) are kept.
    """
    if isinstance(value, str):
        return _MENTION.sub(lambda match: _label_of(match.group(0), own_domain.lower()), value) if "@" in value else value
    if isinstance(value, dict):
        return {key: addresses_redacted(item, own_domain=own_domain) for key, item in value.items()}
    if isinstance(value, list):
        return [addresses_redacted(item, own_domain=own_domain) for item in value]
    return value


def _label_of(text: str, own_domain: str) -> str:
    address = text.rstrip(".")  # a sentence's full stop is not part of the address
    domain = address.rpartition("@")[2].lower()
    if "." not in domain or (own_domain and domain == own_domain):
        return text
    return hash_label(address_hash(address)) + text[len(address):]


def address_problem(address: str) -> str | None:
    """Why ``address`` cannot be mailed, on one line; None when it can. Unicode is fine (SMTPUTF8, IDNA)."""
    return address_validated(address)[1]


def own_address_problem(address: str) -> str | None:
    """``address_problem`` for an address at one of our own sending domains: the ``.test`` names RFC 6761 reserves
    are allowed, since the demo and the benches send from them (a recipient's address is held to the stricter rule)."""
    try:
        validate_email(address, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        return f"invalid address: {exc}"
    return None


def address_checked(address: str, *, field: str = "address") -> str:
    """The address as stored and sent (email-validator's normal form), or ServiceError naming the problem."""
    normalized, problem = address_validated(address)
    if problem is not None:
        raise ServiceError(f"must be an email address ({problem.removeprefix('invalid address: ')})", field=field)
    return normalized


def address_validated(address: str) -> tuple[str, str | None]:
    """(the address as stored and sent, None), or ("", why it cannot be mailed)."""
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        return "", f"invalid address: {exc}"
    local = len(checked.local_part.encode("utf-8"))
    if local > LOCAL_PART_OCTETS:
        return "", f"invalid address: the part before the @-sign is {local} octets, at most {LOCAL_PART_OCTETS} (RFC 5321)"
    total = len(checked.normalized.encode("utf-8"))
    if total > ADDRESS_OCTETS:
        return "", f"invalid address: it is {total} octets, at most {ADDRESS_OCTETS} (RFC 5321)"
    return checked.normalized, None


def address_spellings(address: str) -> list[str]:
    """The ways rows written before the matching form existed may spell ``address``, case aside.

    For the tables keyed by the address itself (the outbox, trigger answers,
    the admin's history), which a GDPR erase must find in every form: as
    given, in email-validator's normal form (domain as U-labels) and with the
    domain as A-labels.
    """
    spellings = {address.strip(), address_key(address)}
    normalized, problem = address_validated(address)
    if problem is None:
        local, _, domain = normalized.rpartition("@")
        spellings |= {normalized, f"{local}@{_domain_key(domain)}"}
    return sorted(s for s in spellings if "@" in s)


def validate_address(value: str) -> None:
    """A Django validator (admin forms, DRF fields) holding the same rule as every service."""
    problem = address_problem(value)
    if problem is not None:
        raise ValidationError(problem, code="invalid")
