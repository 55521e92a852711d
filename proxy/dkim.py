"""DKIM signing: dkimpy's format, OpenSSL's RSA via ``cryptography``, body hash once per message."""

from __future__ import annotations

import base64
import email.utils
import functools
import hashlib
import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy, correct_empty_body, strip_trailing_lines

from proxy.clock import Clock, SystemClock
from proxy.errors import ConfigError
from proxy.rewrite import header_fields, split_message
from proxy.settings import DkimKey

# RFC 6376 §5.4.1 recommends these; RFC 8058 §3.3 requires both unsubscribe
# fields to be signed. dkimpy's default list lacks List-Unsubscribe-Post.
SIGNED = (
    b"from", b"sender", b"reply-to", b"to", b"cc", b"subject", b"date", b"message-id",
    b"in-reply-to", b"references", b"mime-version", b"content-type",
    b"content-transfer-encoding", b"list-id", b"list-unsubscribe", b"list-unsubscribe-post",
    # Gmail's feedback loop trusts a Feedback-ID only under the sender's DKIM signature.
    b"feedback-id",
)
# Named once more than they occur, so no instance can be added after signing
# without breaking the signature (RFC 6376 §5.4.2, §8.15).
OVERSIGNED = (b"from", b"list-unsubscribe", b"list-unsubscribe-post")
# relaxed/relaxed survives the re-folding and whitespace changes of relays (RFC 6376 §3.4).
CANON = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
ALGORITHMS = ("rsa-sha256", "ed25519-sha256")  # RFC 8301 retires rsa-sha1; RFC 8463 adds ed25519
MIN_RSA_BITS = 1024  # RFC 8301 §3.2: signers MUST use at least 1024, SHOULD use 2048
_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")  # RFC 5322 §2.2 field name and colon
# A run of WSP that is not already one space: a tab anywhere in it, or two spaces or more.
_WSP_RUN = re.compile(rb"[\t ]*\t[\t ]*| {2,}")

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
_NAMELEN = len(b"DKIM-Signature")
# b= stands last with a 60-character placeholder (see PreparedBody._one); folded, it is
# always on a line of its own, since the 44 characters of bh= before it leave no room.
_PLACEHOLDER = b"0" * 60
_B_LINE = b"\r\n b=" + _PLACEHOLDER
# A d= and s= of these characters leave dkimpy's b= pattern (RE_BTAG) nothing to match
# but b= itself: no space, ";" or "=" before which a "b" could begin a tag.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SigningKey:
    """A configured key, loaded once at start-up."""

    domain: str
    selector: str
    algorithm: str
    key: PrivateKey

    @functools.cached_property
    def plain(self) -> bool:
        """d= and s= of DNS name characters only (their tags then fold predictably)."""
        return bool(_PLAIN_NAME.fullmatch(self.domain) and _PLAIN_NAME.fullmatch(self.selector))


class DkimSigner:
    """Signs per-recipient copies with every key configured for the From domain."""

    def __init__(
        self,
        keys: Sequence[DkimKey],
        clock: Clock | None = None,
        *,
        expire_after: float | None = None,
    ) -> None:
        """Load every key file now (ConfigError lists each bad one); ``expire_after`` adds x=."""
        errors: list[str] = []
        self._keys: dict[str, list[SigningKey]] = {}
        for cfg in keys:
            try:
                loaded = _load(cfg)
            except ValueError as exc:
                errors.append(f"{cfg.key_file}: {exc}")
                continue
            self._keys.setdefault(cfg.domain.lower(), []).append(loaded)
        if errors:
            raise ConfigError(errors)
        for group in self._keys.values():
            # RSA first: it becomes the topmost signature, the one every verifier knows.
            group.sort(key=lambda k: k.algorithm != "rsa-sha256")
        self._clock = clock or SystemClock()
        self._expire_after = expire_after

    def for_domain(self, domain: str) -> list[SigningKey]:
        """The keys that sign mail from ``domain``: its own, else its nearest parent's."""
        found = key_domain(self._keys, domain)
        return list(self._keys[found]) if found is not None else []

    def prepare(self, domain: str, body: bytes,
                canonical: dict[tuple[bytes, bytes], tuple[bytes, bytes]] | None = None
                ) -> PreparedBody:
        """The body, hashed once (RFC 6376 §3.7) at its first signature; sign each recipient's
        header block from it. ``canonical``: a message's relaxed header fields, shared by its
        copies' bodies."""
        return PreparedBody(self.for_domain(domain), body, self._clock, self._expire_after,
                            {} if canonical is None else canonical)

    def sign_message(self, data: bytes) -> bytes:
        """The whole message with DKIM-Signature fields prepended (for single copies and tests)."""
        header_block, body = split_message(data)
        domain = from_domain(header_block)
        if domain is None:
            return data
        return self.prepare(domain, body).sign(header_block) + data


class PreparedBody:
    """One message body, hashed; ``sign`` costs one header hash and one private-key operation."""

    def __init__(self, keys: list[SigningKey], body: bytes, clock: Clock,
                 expire_after: float | None,
                 canonical: dict[tuple[bytes, bytes], tuple[bytes, bytes]]) -> None:
        self.keys = keys
        self._body = body
        self._clock = clock
        self._expire_after = expire_after
        # field -> its relaxed form: the fields every copy shares are canonicalized once
        # per message; only a copy's own (List-Unsubscribe, Feedback-ID) are new.
        self._canonical = canonical

    @functools.cached_property
    def body_hash(self) -> bytes:
        """bh=, taken when first signed: a message whose every copy gets a body of its own
        (a footer, tracked links) is never hashed as it came."""
        if not self.keys:
            return b""
        return base64.b64encode(hashlib.sha256(relaxed_body(self._body)).digest())

    def sign(self, header_block: bytes) -> bytes:
        """The ``DKIM-Signature: …\\r\\n`` fields to prepend (b"" when no key signs this domain)."""
        if not self.keys:
            return b""
        # Only the fields named in SIGNED can be selected by h=, so only they are
        # canonicalized (dkimpy canonicalizes every field, Received included).
        known = self._canonical
        canonical = []
        for field in _parse(header_block):
            if field[0].lower() in SIGNED:
                relaxed = known.get(field)
                if relaxed is None:
                    relaxed = known[field] = relaxed_header(*field)
                canonical.append(relaxed)
        include = tuple([name for name, _ in canonical] + list(OVERSIGNED))
        now = int(self._clock.now())
        return b"".join(self._one(k, include, canonical, now) for k in self.keys)

    def _one(self, key: SigningKey, include: tuple[bytes, ...],
             headers: list[tuple[bytes, bytes]], now: int) -> bytes:
        # The tag list and folding follow dkimpy's DKIM.sign/gen_header, so a
        # header built here is byte-for-byte what dkimpy would write; only the
        # private-key step goes to OpenSSL.
        x = self._expire_after
        fields = [
            (b"v", b"1"),
            (b"a", key.algorithm.encode()),
            (b"c", CANON.to_c_value()),
            (b"d", key.domain.encode()),
            (b"i", b"@" + key.domain.encode()),
            (b"q", b"dns/txt"),
            (b"s", key.selector.encode()),
            (b"t", str(now).encode()),
            *([(b"x", str(now + int(x)).encode())] if x else []),
            (b"h", b" : ".join(include)),
            (b"bh", self.body_hash),
            # 60 placeholder characters force b= onto its own folded line, so
            # re-folding with the real value keeps every other tag in place.
            (b"b", _PLACEHOLDER),
        ]
        value = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=_NAMELEN)
        # dkimpy empties b= with its RE_BTAG; where b= is the only tag it can match (plain
        # d= and s=) and sits on its own line, that is the folded text less the placeholder.
        short = key.plain and value.endswith(_B_LINE)
        empty = value[:-len(_PLACEHOLDER)] if short else dkim.RE_BTAG.sub(b"\\1", value)
        unsigned = (b"DKIM-Signature", b" " + empty)
        # RFC 6376 §3.7: the selected fields, then this field with an empty b= and
        # without its final CRLF; what dkimpy's hash_headers feeds the hash, with
        # our canonicalization (RE_BTAG has already emptied b=).
        digest = hashlib.sha256()
        for name, text in _select(headers, include):
            digest.update(name + b":" + text)
        name, text = relaxed_header(*unsigned)
        digest.update(name + b":" + text.rstrip())
        if isinstance(key.key, rsa.RSAPrivateKey):
            sig = key.key.sign(digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        else:
            # RFC 8463 §3: Ed25519 (PureEdDSA) over the SHA-256 hash, not the data.
            sig = key.key.sign(digest.digest())
        b = base64.b64encode(sig)
        if short:
            # Folding is greedy and breaks only at spaces, of which the signature has none:
            # every line before b= folds as it did around the placeholder, and b= itself
            # is cut every 71 characters, as dkimpy's fold cuts a run without a space.
            tail = b"b=" + b + b"\r\n"
            return (b"DKIM-Signature: " + value[:-len(_B_LINE)] + b"\r\n "
                    + b"\r\n ".join([tail[i:i + 71] for i in range(0, len(tail), 71)]))
        fields[-1] = (b"b", b)
        value = b"; ".join(b"=".join(f) for f in fields) + b"\r\n"
        return b"DKIM-Signature: " + dkim.fold(value, namelen=_NAMELEN)


def _select(headers: list[tuple[bytes, bytes]], include: tuple[bytes, ...]
            ) -> list[tuple[bytes, bytes]]:
    """dkimpy's select_headers for fields already relaxed (lower-case names): each name of
    h= takes the last instance not yet taken, bottom up (RFC 6376 §5.4.2); a name with no
    instance left selects nothing. One dict pass instead of a scan per name."""
    instances: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for field in headers:
        instances.setdefault(field[0], []).append(field)
    out = []
    for name in include:
        left = instances.get(name)
        if left:
            out.append(left.pop())
    return out


def key_domain(keyed: Collection[str], domain: str) -> str | None:
    """The configured domain whose key signs mail From ``domain``: itself, else its nearest
    parent (news.example.com -> example.com). A parent key keeps DMARC's relaxed
    alignment (RFC 7489 §3.1.1: the same organisational domain); a bare TLD never signs."""
    labels = domain.lower().rstrip(".").split(".")
    for i in range(len(labels) - 1):
        candidate = ".".join(labels[i:])
        if candidate in keyed:
            return candidate
    return None


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4 relaxed body canonicalization, byte-for-byte dkimpy's result.

    dkimpy rewrites every space of the body (two regex passes); mail text is mostly
    single spaces, so only the runs that change are rewritten here, and the
    trailing space of a line, once runs are single, is a plain replace.
    """
    if b"\t" in body or b"  " in body:
        body = _WSP_RUN.sub(b" ", body)
    if b" \r\n" in body:
        body = body.replace(b" \r\n", b"\r\n")
    return bytes(correct_empty_body(strip_trailing_lines(body)))


def relaxed_header(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    """RFC 6376 §3.4.2 relaxed canonicalization of one field, byte-for-byte dkimpy's result.

    As in relaxed_body, the whitespace regex runs only on a value that has a tab or
    a run of spaces. dkimpy unfolds with ``re.sub(rb"\\r?\\n", b"")``: every LF goes,
    and a CR with it when it is a CRLF's; dropping CRLFs, then any LF left, is the same.
    """
    value = value.replace(b"\r\n", b"")
    if b"\n" in value:
        value = value.replace(b"\n", b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return name.lower().rstrip(), value.strip() + b"\r\n"


def from_domain(header_block: bytes) -> str | None:
    """The domain of the first From address (the one DMARC aligns with), lower-cased."""
    for raw in header_fields(header_block):
        name, _, value = raw.partition(b":")
        if name.strip().lower() == b"from":
            return _first_domain(value)
    return None


# A sender writes the same few From fields again and again; the email package's
# address parser costs more than the rest of this module's per-message work.
@functools.lru_cache(maxsize=256)
def _first_domain(value: bytes) -> str | None:
    text = value.replace(b"\r\n", b"").decode("utf-8", errors="replace")
    addr = email.utils.getaddresses([text])
    domain = addr[0][1].rpartition("@")[2] if addr and "@" in addr[0][1] else ""
    return domain.strip().lower().rstrip(".") or None


def _parse(header_block: bytes) -> list[tuple[bytes, bytes]]:
    """(name, value after the colon with its CRLFs) per field, as dkimpy's rfc822_parse gives.

    Only well-formed fields: a broken line is not signed (it cannot be named in h=)
    instead of failing the whole message.
    """
    fields = [f for f in header_fields(header_block) if _NAME.match(f)]
    if header_block.count(b"\n") != header_block.count(b"\r\n"):
        # A bare LF (never after proxy/message.py's normalise): dkimpy splits the lines.
        headers, _ = dkim.rfc822_parse(b"".join(fields) + b"\r\n")
        return [(bytes(n), bytes(v)) for n, v in headers]
    out: list[tuple[bytes, bytes]] = []
    for raw in fields:
        # The name is the text before the first colon (_NAME has no colon in it), and
        # rfc822_parse ends every line of the value with CRLF, the last one too.
        name, _, value = raw.partition(b":")
        out.append((name, value if value.endswith(b"\r\n") else value + b"\r\n"))
    return out


def _load(cfg: DkimKey) -> SigningKey:
    if cfg.algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {cfg.algorithm!r} (use {' or '.join(ALGORITHMS)})")
    try:
        data = cfg.key_file.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an unencrypted PEM private key ({exc})") from None
    want = rsa.RSAPrivateKey if cfg.algorithm == "rsa-sha256" else ed25519.Ed25519PrivateKey
    if not isinstance(key, want):
        raise ValueError(f"key type does not match algorithm {cfg.algorithm}")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise ValueError(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} (RFC 8301)")
    return SigningKey(cfg.domain.lower(), cfg.selector, cfg.algorithm, key)


def generate_key(
    domain: str, selector: str, directory: Path, bits: int = 2048, algorithm: str = "rsa"
) -> tuple[Path, str]:
    """Write a new private key (mode 0600) and return it with the DNS TXT record to publish."""
    key: PrivateKey
    if algorithm == "rsa":
        if bits < MIN_RSA_BITS:
            raise ConfigError([f"dkim keygen: {bits}-bit RSA is too small (RFC 8301: >= 1024)"])
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        # RFC 6376 §3.6.1: p= is the base64 DER SubjectPublicKeyInfo.
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
        # RFC 8463 §4.2: p= is the bare 32-byte public key.
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    else:
        raise ConfigError([f"dkim keygen: unknown algorithm {algorithm!r} (rsa or ed25519)"])
    # RSA as PKCS#1 ("RSA PRIVATE KEY"), what opendkim-genkey writes and dkimpy's
    # own tools read; Ed25519 has no PKCS#1 form, so PKCS#8.
    fmt = serialization.PrivateFormat.PKCS8
    if algorithm == "rsa":
        fmt = serialization.PrivateFormat.TraditionalOpenSSL
    pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{domain}.{selector}.{algorithm}.pem"
    try:
        # O_EXCL: never overwrite a key that may already be published in DNS.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError([f"{path}: already exists; choose another selector"]) from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return path, txt_record(domain, selector, algorithm, public)


def txt_record(domain: str, selector: str, algorithm: str, public: bytes) -> str:
    """``selector._domainkey.domain. IN TXT "…" "…"`` with strings of at most 255 characters."""
    text = f"v=DKIM1; k={algorithm}; p={base64.b64encode(public).decode()}"
    # RFC 1035 §3.3: one character-string holds at most 255 octets; resolvers
    # join the strings of one TXT record (RFC 6376 §3.6.2.2).
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)]
    return f"{selector}._domainkey.{domain.rstrip('.')}. IN TXT " + " ".join(
        f'"{c}"' for c in chunks
    )
