"""Certificates as the daemon describes them, and the ``ssl`` module's view of them.

The daemon's ``info`` reply and ``verify_peer`` event describe each
certificate as an object (docs/protocol.md §2.1): its PEM text, subject and
issuer (RFC 2253), serial, validity (UTC ISO 8601), algorithms, SANs and
SHA-256 fingerprint.  :class:`Certificate` wraps one; :func:`ssl_dict` gives
the dict that :meth:`ssl.SSLSocket.getpeercert` returns for it.  Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = ["Certificate", "with_certificates", "ssl_dict", "parse_dn"]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# OpenSSL's short names (as RFC 2253 text has them) -> the long names ssl uses.
_LONG_NAMES = {
    "CN": "commonName",
    "C": "countryName",
    "L": "localityName",
    "ST": "stateOrProvinceName",
    "O": "organizationName",
    "OU": "organizationalUnitName",
    "street": "streetAddress",
    "DC": "domainComponent",
    "UID": "userId",
    "SN": "surname",
    "GN": "givenName",
    "title": "title",
    "serialNumber": "serialNumber",
    "emailAddress": "emailAddress",
    "postalCode": "postalCode",
    "businessCategory": "businessCategory",
    "jurisdictionC": "jurisdictionCountryName",
    "jurisdictionST": "jurisdictionStateOrProvinceName",
    "jurisdictionL": "jurisdictionLocalityName",
    "name": "name",
    "initials": "initials",
    "pseudonym": "pseudonym",
    "dnQualifier": "dnQualifier",
    "organizationIdentifier": "organizationIdentifier",
}

# The daemon's SAN prefixes -> ssl's.
_SAN_TYPES = {"DNS": "DNS", "IP": "IP Address", "email": "email", "URI": "URI"}


class Certificate:
    """One X.509 certificate, as the daemon reports it.

    Attributes are the daemon's fields: ``pem``, ``subject`` and ``issuer``
    (RFC 2253 text such as ``"CN=localhost,O=Example"``), ``serial`` (hex),
    ``not_before``/``not_after`` (``"2026-12-01T15:39:37Z"``),
    ``signature_algorithm``, ``public_key`` (``{"type": "EC", "bits": 256}``),
    ``san`` (``["DNS:localhost", "IP:127.0.0.1"]``) and ``sha256`` (hex).
    :attr:`der` is the DER encoding, :meth:`getpeercert` the ``ssl`` module's
    dict, :attr:`fields` the daemon's object as it came.
    """

    __slots__ = ("fields",)

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.fields: Dict[str, Any] = dict(fields)

    def __getattr__(self, name: str) -> Any:
        if name in ("pem", "subject", "issuer", "serial", "not_before", "not_after", "signature_algorithm", "sha256"):
            return self.fields.get(name)
        if name == "public_key":
            return dict(self.fields.get(name) or {})
        if name == "san":
            return list(self.fields.get(name) or [])
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"<tlsport.Certificate subject={self.subject!r} issuer={self.issuer!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Certificate) and self.fields == other.fields

    def __hash__(self) -> int:
        return hash(self.fields.get("sha256") or self.fields.get("pem"))

    @property
    def der(self) -> bytes:
        """The certificate in DER, decoded from :attr:`pem`."""
        return pem_to_der(str(self.pem or ""))

    @property
    def not_valid_before(self) -> Optional[datetime.datetime]:
        """:attr:`not_before` as an aware UTC datetime."""
        return _utc(self.not_before)

    @property
    def not_valid_after(self) -> Optional[datetime.datetime]:
        """:attr:`not_after` as an aware UTC datetime."""
        return _utc(self.not_after)

    def getpeercert(self) -> Dict[str, Any]:
        """The dict :meth:`ssl.SSLSocket.getpeercert` gives for this certificate."""
        return ssl_dict(self)


def with_certificates(body: Mapping[str, Any]) -> Dict[str, Any]:
    """An ``info`` reply's fields, certificates as :class:`Certificate` objects."""
    out = dict(body)
    for key in ("peer_certificate", "local_certificate"):
        if isinstance(out.get(key), Mapping):
            out[key] = Certificate(out[key])
    if isinstance(out.get("peer_chain"), list):
        out["peer_chain"] = chain(out["peer_chain"])
    return out


def chain(items: Any) -> List[Certificate]:
    """A list of the daemon's certificate objects as :class:`Certificate` objects."""
    return [Certificate(c) for c in items or [] if isinstance(c, Mapping)]


def peercert(info: Mapping[str, Any], binary_form: bool) -> Any:
    """``getpeercert`` from an ``info`` dict: ``None`` without a peer certificate."""
    cert = info.get("peer_certificate")
    if not isinstance(cert, Certificate):
        return None
    return cert.der if binary_form else cert.getpeercert()


def pem_to_der(pem: str) -> bytes:
    """The first certificate of PEM text, in DER."""
    match = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", pem, re.S)
    if match is None:
        raise ValueError("no PEM certificate")
    try:
        return base64.b64decode("".join(match.group(1).split()), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad PEM certificate: {exc}") from None


def ssl_dict(cert: Certificate) -> Dict[str, Any]:
    """The ``ssl`` module's dict: subject and issuer as tuples of RDNs (most
    general first, long attribute names), ``version``, ``serialNumber``,
    ``notBefore``/``notAfter`` in ``ssl``'s time format, ``subjectAltName``."""
    out: Dict[str, Any] = {"subject": parse_dn(cert.subject or ""), "issuer": parse_dn(cert.issuer or "")}
    try:
        out["version"] = _x509_version(cert.der)
    except ValueError:
        pass
    if cert.serial is not None:
        out["serialNumber"] = str(cert.serial).upper()
    for key, field in (("notBefore", "not_before"), ("notAfter", "not_after")):
        when = _utc(cert.fields.get(field))
        if when is not None:
            out[key] = f"{_MONTHS[when.month - 1]} {when.day:2d} {when:%H:%M:%S %Y} GMT"
    san: List[Tuple[str, str]] = []
    for entry in cert.san:
        kind, _, value = str(entry).partition(":")
        san.append((_SAN_TYPES.get(kind, kind), value))
    if san:
        out["subjectAltName"] = tuple(san)
    return out


def parse_dn(text: str) -> Tuple[Tuple[Tuple[str, str], ...], ...]:
    """RFC 2253 text (most specific RDN first) -> ``ssl``'s tuple of RDNs (most
    general first), each a tuple of ``(long name, value)``."""
    rdns: List[Tuple[Tuple[str, str], ...]] = []
    current: List[Tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        eq = text.find("=", i)
        if eq < 0:
            break
        name = text[i:eq].strip()
        value, i = _dn_value(text, eq + 1)
        current.append((_LONG_NAMES.get(name, name), value))
        sep = text[i] if i < n else ","
        i += 1
        if sep == ",":
            rdns.append(tuple(current))
            current = []
    if current:
        rdns.append(tuple(current))
    return tuple(reversed(rdns))


def _dn_value(text: str, i: int) -> Tuple[str, int]:
    """One attribute value from ``text[i:]``, unescaped; and where it ended."""
    raw = bytearray()
    n = len(text)
    while i < n and text[i] not in ",+":
        c = text[i]
        if c == "\\" and i + 1 < n:
            pair = text[i + 1 : i + 3]
            if len(pair) == 2 and all(ch in "0123456789abcdefABCDEF" for ch in pair):
                raw.append(int(pair, 16))
                i += 3
                continue
            raw += text[i + 1].encode("utf-8")
            i += 2
            continue
        raw += c.encode("utf-8")
        i += 1
    return raw.decode("utf-8", "replace"), i


def _utc(text: Any) -> Optional[datetime.datetime]:
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def _x509_version(der: bytes) -> int:
    """The certificate's version (1, 2 or 3) read from its DER encoding."""
    _, body = _der_header(der, 0)  # Certificate ::= SEQUENCE
    tag, tbs = _der_header(der, body)  # TBSCertificate ::= SEQUENCE
    if tag != 0x30 or tbs >= len(der):
        raise ValueError("not a certificate")
    if der[tbs] != 0xA0:  # [0] EXPLICIT Version DEFAULT v1
        return 1
    _, inner = _der_header(der, tbs)
    tag, value = _der_header(der, inner)
    if tag != 0x02 or value >= len(der):
        raise ValueError("bad version")
    return der[value] + 1


def _der_header(der: bytes, i: int) -> Tuple[int, int]:
    """The tag at ``der[i]`` and where its contents start."""
    if i + 2 > len(der):
        raise ValueError("truncated DER")
    tag, length = der[i], der[i + 1]
    i += 2
    if length & 0x80:
        i += length & 0x7F
    return tag, i
