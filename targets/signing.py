"""`aotc compile --sign KEY`: an Ed25519 signature over the bundle's manifest (which lists the SHA-256
of every other file), checked by `runtime_stub.load(path, public_key=...)` and `aotc run --public-key`
before any of the bundle's code is loaded. The format lives in runtime_stub/signature.py; this module
reads the private key and writes the signature."""
from __future__ import annotations

from pathlib import Path

from aotc.compiler.errors import AotcError
from aotc.runtime_stub.signature import MANIFEST_FILE, SIGNATURE_FILE, signed_message


class SigningKeyError(AotcError):
    """The --sign key cannot be read or is not an Ed25519 private key."""


def load_signing_key(path: str):
    """The Ed25519 private key in the PEM file `path` (e.g. from `openssl genpkey -algorithm ed25519`)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise SigningKeyError(f"Cannot read the signing key {path!r}: {e.strerror or e}.") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise SigningKeyError(f"{path!r} is not an unencrypted PEM private key ({e}); make one with "
                              "`openssl genpkey -algorithm ed25519 -out key.pem`.") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SigningKeyError(f"{path!r} holds a {type(key).__name__}; --sign needs an Ed25519 key "
                              "(`openssl genpkey -algorithm ed25519 -out key.pem`).")
    return key


def sign_bundle(bundle_dir: Path, key) -> None:
    """Writes manifest.sig for the manifest.json in `bundle_dir` (deterministic: Ed25519, RFC 8032)."""
    manifest = (Path(bundle_dir) / MANIFEST_FILE).read_bytes()
    (Path(bundle_dir) / SIGNATURE_FILE).write_bytes(key.sign(signed_message(manifest)))
