"""Ed25519 signatures over a bundle's manifest: what `aotc compile --sign KEY` writes and what
`runtime_stub.load(path, public_key=...)` checks before any of the bundle's code is loaded.

The manifest lists the SHA-256 of every other file in the bundle, so one signature over its
exact bytes covers the whole bundle. The signature is `manifest.sig` (64 raw bytes) beside it,
over a domain-separated message, so it cannot be replayed as a signature of anything else.
Ed25519 signatures are deterministic: a signed build stays byte-identical.

`cryptography` is imported only here and only when a key is given: a device that does not
check signatures needs numpy alone.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import RuntimeStubError

SIGNATURE_FILE = "manifest.sig"
MANIFEST_FILE = "manifest.json"
_DOMAIN = b"aotc bundle manifest signature v1\x00"


class SignatureError(RuntimeStubError):
    """The bundle is unsigned, or its signature does not verify with the given public key."""


def signed_message(manifest: bytes) -> bytes:
    return _DOMAIN + manifest


def _ed25519():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:  # a dependency of aotc; an extra of the runtime-only aotc-runtime
        raise SignatureError("checking bundle signatures needs the 'cryptography' package "
                             f"(pip install cryptography, or aotc-runtime[signatures]): {e}") from None
    return ed25519, serialization, InvalidSignature


def key_fingerprint(raw_public_key: bytes) -> str:
    """A short name for a public key in messages: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


def load_public_key(public_key):
    """An Ed25519 public key from a PEM file path, PEM bytes, 32 raw bytes or a key object."""
    ed25519, serialization, _ = _ed25519()
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return public_key
    what = "the public key"
    if isinstance(public_key, (str, os.PathLike)):
        what = f"public key file {str(public_key)!r}"
        try:
            public_key = Path(public_key).read_bytes()
        except OSError as e:
            raise SignatureError(f"cannot read {what}: {e.strerror or e}") from None
    if not isinstance(public_key, (bytes, bytearray)):
        raise SignatureError(f"public_key must be a PEM file path, PEM bytes or 32 raw bytes, not "
                             f"{type(public_key).__name__}")
    data = bytes(public_key)
    try:
        if len(data) == 32 and not data.startswith(b"-----"):
            return ed25519.Ed25519PublicKey.from_public_bytes(data)
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise SignatureError(f"{what} is not an Ed25519 public key in PEM ({e})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SignatureError(f"{what} is a {type(key).__name__}, not an Ed25519 public key")
    return key


def raw_public_bytes(key) -> bytes:
    _, serialization, _ = _ed25519()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verified_manifest(bundle: str | os.PathLike, public_key) -> bytes:
    """The bytes of `bundle`'s manifest.json, once their signature verifies with `public_key`.

    The caller must use these bytes, not re-read the file, so what it loads is what was verified."""
    _, _, InvalidSignature = _ed25519()
    key = load_public_key(public_key)
    bundle = Path(bundle)
    try:
        manifest = (bundle / MANIFEST_FILE).read_bytes()
    except OSError as e:
        raise SignatureError(f"{bundle} is not an aotc bundle: no readable {MANIFEST_FILE} ({e.strerror or e})") from None
    fp = key_fingerprint(raw_public_bytes(key))
    try:
        signature = (bundle / SIGNATURE_FILE).read_bytes()
    except OSError:
        raise SignatureError(f"bundle {bundle} is not signed (no {SIGNATURE_FILE}), and a public key ({fp}) was "
                             "given: refusing to load it; sign it with `aotc compile --sign KEY`") from None
    try:
        key.verify(signature, signed_message(manifest))
    except InvalidSignature:
        raise SignatureError(f"bundle {bundle}: {SIGNATURE_FILE} does not verify with public key {fp} (the manifest "
                             "was changed after signing, or another key signed it): refusing to load it") from None
    return manifest


def check_listed_files(bundle: str | os.PathLike, manifest: dict) -> None:
    """Every file the (verified) manifest lists has its SHA-256: for bundles whose own executables run
    (arm64-neon's aotc_runner), which must be checked before they run, not by themselves."""
    bundle = Path(bundle)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        raise SignatureError(f"bundle {bundle}: the signed manifest lists no files")
    for name, digest in files.items():
        # A bucketed bundle lists its buckets' files as FOLDER/NAME.
        if not isinstance(name, str) or any(p in ("", ".", "..") for p in name.split("/")) or \
                "\\" in name or not isinstance(digest, str):
            raise SignatureError(f"bundle {bundle}: the manifest lists a bad file entry {name!r}")
        try:
            actual = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
        except OSError as e:
            raise SignatureError(f"bundle {bundle} is incomplete: cannot read {name} ({e.strerror or e})") from None
        if actual != digest:
            raise SignatureError(f"bundle {bundle} is corrupted: {name} has SHA-256 {actual[:16]}..., the signed "
                                 f"manifest says {digest[:16]}...")
