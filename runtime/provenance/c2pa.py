"""C2PA content credentials on every file facecast writes (``render``, ``cam --record``).

A signed C2PA manifest (C2PA Technical Specification 2.x, through the C2PA project's own
``c2pa-python``) is embedded in the MP4: a ``c2pa.created`` action whose ``digitalSourceType``
is IPTC's ``trainedAlgorithmicMedia``, facecast and its version as the claim generator, and a
``facecast.synthesis`` assertion with the avatar (name, content hash, licence, attribution,
consent statement), the speech source (TTS engine or audio file), whether the visible badge and
the invisible watermark were on.

The signing identity is the operator's: ``--c2pa-cert CHAIN.pem --c2pa-key KEY.pem`` or
``FACECAST_C2PA_CERT`` / ``FACECAST_C2PA_KEY`` (a PEM chain, signing certificate first, and its
PKCS#8 EC P-256 key: ES256). With none, facecast makes a local development identity once (a
self-signed root and a signing certificate under it, ``dev_identity``), keeps it under the data
folder and says so: files signed with it validate structurally, but no one else trusts it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
"""IPTC digital source type for media made by a trained model (C2PA 2.x ``c2pa.created``)."""
ASSERTION_LABEL = "facecast.synthesis"
"""Label of facecast's own assertion (what was synthesised from what)."""
CERT_ENV, KEY_ENV = "FACECAST_C2PA_CERT", "FACECAST_C2PA_KEY"
MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime",
        ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


class C2paFailure(RuntimeError):
    """Signing or reading credentials failed; the message says which file and why."""


@dataclass(frozen=True)
class Identity:
    """A signing identity: PEM certificate chain (signing certificate first) and PEM private
    key, and whether it is facecast's local development identity."""

    cert_chain: bytes
    private_key: bytes
    development: bool
    source: str


@dataclass
class Provenance:
    """What a file's manifest says about how it was made.

    Attributes:
        avatar: the bundle's name; avatar_metadata: its ``avatar.json`` (content hash, licence,
            attribution, consent are copied from it).
        speech: where the words came from (``"tts:espeak-ng en-us"``, ``"audio:talk.wav"``,
            ``"microphone:NAME"``).
        badge: whether the visible disclosure badge was on; watermark: the invisible mark.
        title: the manifest's title (the file name by default).
    """

    avatar: str
    avatar_metadata: dict
    speech: str
    badge: bool
    watermark: bool
    title: str | None = None
    extra: dict = field(default_factory=dict)


def data_dir() -> Path:
    """facecast's data folder: ``$XDG_DATA_HOME/facecast`` or ``~/.local/share/facecast``."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "facecast"


def _make_dev_identity(folder: Path) -> None:
    """Write ``chain.pem`` (signing certificate, then its root) and ``key.pem`` into
    ``folder``: an ES256 signing certificate with the key usage and extended key usage the
    C2PA certificate profile asks for (digitalSignature; emailProtection), under a
    self-signed root, valid 5 years."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = _dt.datetime.now(_dt.UTC)
    until = now + _dt.timedelta(days=5 * 365)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "facecast local dev root"),
                           x509.NameAttribute(NameOID.ORGANIZATION_NAME, "facecast (development)")])
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()),
                           critical=False)
            .sign(root_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "facecast local dev signer"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "facecast (development)")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(root_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    (folder / "chain.pem").write_bytes(cert.public_bytes(pem) + root.public_bytes(pem))
    key_path = folder / "key.pem"
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


def dev_identity(folder: Path | None = None) -> Identity:
    """facecast's local development identity, made on first use under ``folder`` (default
    ``data_dir() / "c2pa-dev"``) and kept. Raises C2paFailure when it cannot be written."""
    folder = folder or data_dir() / "c2pa-dev"
    chain, key = folder / "chain.pem", folder / "key.pem"
    if not (chain.is_file() and key.is_file()):
        try:
            tmp = Path(tempfile.mkdtemp(prefix=".c2pa-dev-", dir=_ensure(folder.parent)))
            _make_dev_identity(tmp)
            if not (chain.is_file() and key.is_file()):
                shutil.rmtree(folder, ignore_errors=True)
                tmp.rename(folder)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError as exc:
            raise C2paFailure(f"cannot keep a C2PA development identity in {folder}: "
                              f"{exc.strerror or exc}") from exc
    return Identity(chain.read_bytes(), key.read_bytes(), True, str(folder))


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def resolve_identity(cert: str | os.PathLike | None = None,
                     key: str | os.PathLike | None = None) -> Identity:
    """The operator's identity from ``cert``/``key`` paths, else ``FACECAST_C2PA_CERT`` /
    ``FACECAST_C2PA_KEY``, else ``dev_identity()``. Raises ValueError when only one of the
    pair is given, or a file cannot be read or is not PEM."""
    cert = cert or os.environ.get(CERT_ENV)
    key = key or os.environ.get(KEY_ENV)
    if not cert and not key:
        return dev_identity()
    if not (cert and key):
        raise ValueError("C2PA signing needs both a certificate chain and its key "
                         f"(--c2pa-cert and --c2pa-key, or {CERT_ENV} and {KEY_ENV})")
    blobs = []
    for what, path in (("certificate chain", cert), ("key", key)):
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read the C2PA {what} {path}: {exc.strerror}") from None
        if b"-----BEGIN" not in data:
            raise ValueError(f"the C2PA {what} {path} is not PEM")
        blobs.append(data)
    return Identity(blobs[0], blobs[1], False, f"{cert}")


def manifest_definition(p: Provenance, version: str) -> dict:
    """The manifest definition (c2pa-python's JSON form) for ``p``."""
    meta = p.avatar_metadata
    return {
        "claim_generator_info": [{"name": "facecast", "version": version}],
        "title": p.title or "facecast output",
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [{
                "action": "c2pa.created",
                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                "softwareAgent": {"name": "facecast", "version": version},
                "description": "talking-avatar video synthesised from a portrait and speech",
            }]}},
            {"label": ASSERTION_LABEL, "data": {
                "avatar": {"name": p.avatar,
                           "content_hash": meta.get("content_hash"),
                           "licence": meta.get("licence"),
                           "attribution": meta.get("attribution"),
                           "source": meta.get("source"),
                           "consent": meta.get("consent")},
                "speech": p.speech,
                "disclosure_badge": p.badge,
                "watermark": p.watermark,
                **p.extra,
            }},
        ],
    }


def facecast_version() -> str:
    """The installed facecast's version (``importlib.metadata``), ``"0+unknown"`` if none."""
    from importlib import metadata

    try:
        return metadata.version("facecast")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def sign_file(path: str | os.PathLike, provenance: Provenance,
              identity: Identity | None = None, mime: str | None = None) -> Identity:
    """Embed a signed manifest for ``provenance`` into the file at ``path`` (replaced
    atomically). ``mime``: the file's type when its suffix does not say (a temporary file).
    Returns the identity used. Raises C2paFailure (the file is left unsigned, as written) when
    signing fails, ValueError for a file type C2PA cannot carry."""
    import c2pa

    path = Path(path)
    mime = mime or MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"cannot add C2PA credentials to a {path.suffix or 'suffix-less'} file")
    identity = identity or resolve_identity()
    definition = manifest_definition(
        Provenance(**{**provenance.__dict__, "title": provenance.title or path.name}),
        facecast_version())
    tmp = path.with_name(f".{path.name}.c2pa-tmp")
    try:
        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, identity.cert_chain,
                                   identity.private_key, None)
        with c2pa.Signer.from_info(info) as signer, \
                c2pa.Builder(json.dumps(definition)) as builder, \
                open(path, "rb") as src, open(tmp, "wb") as dst:
            builder.sign(signer, mime, src, dst)
        os.replace(tmp, path)
    except (c2pa.C2paError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise C2paFailure(f"C2PA signing of {path} failed: {exc}") from exc
    return identity


def mp4_signer(provenance: Provenance, identity: Identity | None = None):
    """The ``runtime.offline.mp4.Mp4Writer`` credentials callback: signs the finished
    (temporary, suffix-less) MP4 with ``provenance`` (``sign_file``)."""

    def sign(path: Path) -> None:
        sign_file(path, provenance, identity, mime="video/mp4")

    return sign


def dev_trust_anchor(folder: Path | None = None) -> bytes | None:
    """The root certificate (PEM) of this machine's development identity, if it has one (the
    chain ``_make_dev_identity`` writes: signing certificate, then root); None otherwise."""
    chain = (folder or data_dir() / "c2pa-dev") / "chain.pem"
    if not chain.is_file():
        return None
    pem = chain.read_bytes()
    end = b"-----END CERTIFICATE-----"
    return pem[pem.index(end) + len(end):].strip() + b"\n"


@dataclass(frozen=True)
class Credentials:
    """What ``read_credentials`` found.

    Attributes:
        present: a manifest store is embedded; valid: it validates (signature, hashes of the
            file's bytes, claim structure; ``validation_state`` Valid or Trusted). Whether
            anyone trusts the signer is ``trusted``, not part of ``valid``.
        state: c2pa's ``validation_state`` (None when absent); failures: the codes of failed
            validation results; generator, source_type, assertion: from the active manifest.
        trusted: the signer chains to a trust anchor given (facecast's development root
            counts only on the machine that made it).
    """

    present: bool
    valid: bool
    state: str | None = None
    trusted: bool = False
    failures: tuple[str, ...] = ()
    generator: str | None = None
    source_type: str | None = None
    assertion: dict | None = None
    signer: str | None = None


def read_credentials(path: str | os.PathLike, trust_pem: bytes | None = None) -> Credentials:
    """Read and validate the C2PA manifest of the file at ``path``. ``trust_pem``: extra trust
    anchors (PEM), e.g. facecast's development root. Raises OSError for an unreadable file."""
    import c2pa

    path = Path(path)
    mime = MIME.get(path.suffix.lower())
    with open(path, "rb") as stream:
        if mime is None:
            return Credentials(False, False)
        context = None
        if trust_pem:
            context = c2pa.Context(c2pa.Settings.from_dict(
                {"verify": {"verify_trust": True}, "trust": {"user_anchors": trust_pem.decode()}}))
        try:
            reader = c2pa.Reader(mime, stream, context=context)
        except c2pa.C2paError as exc:
            text = str(exc)
            if "ManifestNotFound" in text or "JumbfNotFound" in text or "no JUMBF" in text.lower():
                return Credentials(False, False)
            return Credentials(True, False, "Invalid", failures=(text.splitlines()[0][:200],))
        with reader:
            store = json.loads(reader.json())
        state = store.get("validation_state")
        results = store.get("validation_results") or {}
        active = (results.get("activeManifest") or {})
        failures = tuple(sorted({f.get("code", "?") for f in active.get("failure", [])}))
        trusted = any(s.get("code") == "signingCredential.trusted"
                      for s in active.get("success", []))
        manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    generator = None
    info = manifest.get("claim_generator_info") or []
    if info:
        generator = f"{info[0].get('name')} {info[0].get('version', '')}".strip()
    source_type, assertion = None, None
    for a in manifest.get("assertions", []):
        if a.get("label", "").startswith("c2pa.actions"):
            for act in a.get("data", {}).get("actions", []):
                if act.get("action") == "c2pa.created":
                    source_type = act.get("digitalSourceType")
        elif a.get("label") == ASSERTION_LABEL:
            assertion = a.get("data")
    signer = (manifest.get("signature_info") or {}).get("issuer")
    return Credentials(True, state in ("Valid", "Trusted"), state,
                       trusted or state == "Trusted", failures, generator, source_type,
                       assertion, signer)
