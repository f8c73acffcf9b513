"""Opt-in C2PA Content Credentials (``[output] content_credentials = true``), through ``c2pa-python``.

The manifest carries a ``c2pa.actions`` assertion (``c2pa.created`` with the IPTC digital source type
for a render; ``c2pa.opened`` of the original plus ``c2pa.edited`` for an upscale), a
``org.localflux.recipe`` assertion with the sha256 of the canonical recipe JSON, and every input
image as an ingredient (c2pa-python hashes it and keeps its own credentials, if any).

Signing key and certificate: the user's (``[output] c2pa_cert`` / ``c2pa_key``, PEM), else a local
CA and an ES256 end-entity certificate generated once in the user data folder (the key file 0600;
C2PA refuses a self-signed leaf). Such credentials validate, but public verifiers show the signer
as untrusted: the local CA is nobody's trust anchor.

A signature differs run to run, so credentialed files are not byte-identical; their pixels and
recipe are.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .. import __version__, optional
from ..errors import ConfigError, OutputError
from ..output import atomic_write_bytes, user_data_dir
from . import xmp
from .png import CHUNK_RECIPE, CHUNK_XMP, label_for, label_for_upscale, to_json

INSTALL_HINT = optional.install_hint("c2pa")
RECIPE_ASSERTION = "org.localflux.recipe"
_MAX_PEM = 1 << 20


def available() -> bool:
    return optional.is_available("c2pa")


def require() -> None:
    """One clear sentence when Content Credentials are asked for without c2pa-python."""
    if not available():
        raise ConfigError(f"content credentials need the c2pa-python package, which is not installed; {INSTALL_HINT}")


def check_output(output) -> None:
    """What can be checked before rendering: the package, and the key files when the user names them."""
    require()
    if (output.c2pa_cert is None) != (output.c2pa_key is None):
        raise ConfigError("output.c2pa_cert and output.c2pa_key go together: set both, or neither for the local key")
    for what, path in (("cert", output.c2pa_cert), ("key", output.c2pa_key)):
        if path is not None:
            _read_pem(Path(path), what)


@dataclass(frozen=True)
class Ingredient:
    """An input image: a photo being upscaled (``parentOf``) or, later, an img2img/reference input (``componentOf``)."""

    path: Path
    relationship: str = "componentOf"
    source: str | None = None  # where the image came from, as the user noted it ([input] source, --source)
    license: str | None = None  # under which permission it is used ([input] license, --license)


def _format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "tif": "image/tiff",
            "tiff": "image/tiff", "avif": "image/avif", "bmp": "image/bmp"}.get(suffix, "application/octet-stream")


# ---------------------------------------------------------------- keys


def _generate_local_ca(folder: Path) -> tuple[Path, Path]:
    """A local CA and an ES256 end-entity certificate signed by it (C2PA refuses a self-signed leaf)."""
    optional.require("cryptography", "making the local C2PA signing key", ConfigError)
    # optional package (the c2pa extra), after optional.require
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localflux local CA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "localflux (local, untrusted)")])
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localflux local signer"),
                           x509.NameAttribute(NameOID.ORGANIZATION_NAME, "localflux (local, untrusted)")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(leaf_name).issuer_name(ca_name).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    key_pem = leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    chain = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    key_path, cert_path = folder / "signer.key", folder / "signer-chain.pem"
    atomic_write_bytes(key_path, key_pem, mode=0o600)  # the one private file: never the umask's mode
    atomic_write_bytes(cert_path, chain)
    return cert_path, key_path


def local_credentials(folder: Path | None = None) -> tuple[Path, Path]:
    """The local signing certificate chain and key, made on first use."""
    folder = folder or user_data_dir() / "c2pa"
    cert, key = folder / "signer-chain.pem", folder / "signer.key"
    if cert.is_file() and key.is_file():
        return cert, key
    try:
        return _generate_local_ca(folder)
    except OutputError:
        if cert.is_file() and key.is_file():  # another process made them meanwhile
            return cert, key
        raise


def _read_pem(path: Path, what: str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"C2PA {what} {str(path)!r} does not exist; set output.c2pa_{what} to a PEM file")
    data = path.read_bytes()[:_MAX_PEM]
    if b"-----BEGIN" not in data:
        raise ConfigError(f"C2PA {what} {str(path)!r} is not a PEM file")
    return data


# ---------------------------------------------------------------- signing


class Signer:
    """Signs PNG bytes; ``Signer.from_output(config.output)`` for a render, ``Signer()`` for the local key."""

    def __init__(self, cert: str | Path | None = None, key: str | Path | None = None) -> None:
        require()
        if (cert is None) != (key is None):
            raise ConfigError("output.c2pa_cert and output.c2pa_key go together: set both, or neither for the local key")
        if cert is None:
            cert, key = local_credentials()
        self.cert_pem = _read_pem(Path(cert), "cert")
        self.key_pem = _read_pem(Path(key), "key")

    @classmethod
    def from_output(cls, output) -> Signer | None:
        """The signer an ``[output]`` table asks for, or None when content_credentials is off."""
        if not output.content_credentials:
            return None
        return cls(output.c2pa_cert, output.c2pa_key)

    def _signer(self):
        import c2pa  # optional package, after require() in __init__

        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, self.cert_pem, self.key_pem, None)
        try:
            return c2pa.Signer.from_info(info)
        except c2pa.C2paError as exc:
            raise ConfigError(f"the C2PA certificate and key cannot sign ({_first_line(exc)}); they must be an "
                              "ES256 (P-256) key and its certificate chain, leaf first, not self-signed") from None

    def sign_png(self, data: bytes, recipe: dict | None, ingredients: list[Ingredient] | tuple = (), *,
                 source_type: str | None = None, title: str = "image.png") -> bytes:
        """``data`` (a PNG) with a signed C2PA manifest embedded."""
        return sign_png(data, recipe, ingredients, signer=self, source_type=source_type, title=title)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]


def recipe_sha256(recipe: dict) -> str:
    return hashlib.sha256(to_json(recipe).encode()).hexdigest()


def manifest(recipe: dict | None, ingredients: list[tuple[Ingredient, str, bool]], source_type: str,
             title: str) -> dict:
    """The manifest definition. ``ingredients``: (ingredient, sha256, has its own credentials)."""
    agent = {"name": "localflux", "version": __version__}
    parents = [i for i, _, _ in ingredients if i.relationship == "parentOf"]
    if parents:
        actions = [{"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}},
                   {"action": "c2pa.edited", "digitalSourceType": source_type, "softwareAgent": agent,
                    "description": "upscaled with a Real-ESRGAN network"}]
    else:
        actions = [{"action": "c2pa.created", "digitalSourceType": source_type, "softwareAgent": agent}]
    record = {"inputs": [{"title": i.path.name, "relationship": i.relationship, "sha256": digest,
                          **{k: v for k, v in (("source", i.source), ("license", i.license)) if v}}
                         for i, digest, _ in ingredients]}
    if recipe is not None:
        record.update(recipe_sha256=recipe_sha256(recipe), schema_version=recipe.get("schema_version"))
    return {
        "claim_generator_info": [agent],
        "title": title,
        "format": "image/png",
        "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": actions}},
                       {"label": RECIPE_ASSERTION, "data": record}],
    }


def input_ingredients(recipe: dict | None) -> list[Ingredient]:
    """The input images a recipe records (img2img, masks, references …), as ``componentOf`` ingredients."""
    records = (recipe or {}).get("inputs") or []
    return [Ingredient(Path(r["path"]), "componentOf", r.get("source"), r.get("license"))
            for r in records if isinstance(r, dict) and isinstance(r.get("path"), str) and Path(r["path"]).is_file()]


def sign_png(data: bytes, recipe: dict | None, ingredients=(), *, signer: Signer | None = None,
             source_type: str | None = None, title: str = "image.png") -> bytes:
    """``data`` (PNG bytes) signed with a C2PA manifest: the recipe's hash and each input image as an ingredient.

    ``ingredients``: paths or :class:`Ingredient`; a plain path is a ``componentOf`` input.
    ``source_type``: the IPTC digital source type (default: what the label of ``recipe`` says).
    """
    import c2pa  # optional package, after require() in Signer()

    signer = signer or Signer()
    items = [i if isinstance(i, Ingredient) else Ingredient(Path(i)) for i in ingredients]
    source_type = source_type or label_for(recipe) or xmp.TRAINED
    hashed = [(i, hashlib.sha256(Path(i.path).read_bytes()).hexdigest(), has_credentials(i.path)) for i in items]
    try:
        with c2pa.Builder(manifest(recipe, hashed, source_type, title)) as builder:
            for n, (item, _digest, _) in enumerate(hashed):
                spec = {"title": item.path.name, "relationship": item.relationship,
                        "label": "parent" if item.relationship == "parentOf" else f"input{n}"}
                with open(item.path, "rb") as stream:
                    builder.add_ingredient(spec, _format(item.path), stream)
            out = io.BytesIO()
            with signer._signer() as native:
                builder.sign(native, "image/png", io.BytesIO(data), out)
    except c2pa.C2paError as exc:
        raise OutputError(f"C2PA signing failed ({_first_line(exc)})") from None
    return out.getvalue()


def sign_upscale(data: bytes, original: Path, signer: Signer, title: str, *, source: str | None = None,
                 license: str | None = None) -> bytes:
    """An upscaled PNG signed with its original as the parent ingredient (its own credentials carry over)."""
    with Image.open(io.BytesIO(data)) as image:
        text = dict(getattr(image, "text", None) or {})
    try:
        recipe = json.loads(text[CHUNK_RECIPE]) if CHUNK_RECIPE in text else None
    except ValueError:
        recipe = None
    source_type = xmp.read_source_type(text.get(CHUNK_XMP)) or label_for_upscale(text) or xmp.COMPOSITE
    if source_type not in xmp.SOURCE_TYPES:
        source_type = xmp.COMPOSITE
    return signer.sign_png(data, recipe if isinstance(recipe, dict) else None,
                           [Ingredient(Path(original), "parentOf", source, license)], source_type=source_type,
                           title=title)


# ---------------------------------------------------------------- reading


def has_credentials(path: str | Path) -> bool:
    """Whether a file carries a C2PA manifest (a PNG ``caBX`` chunk; other formats: c2pa-python's reader)."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head == b"\x89PNG\r\n\x1a\n":
        return b"caBX" in _png_chunk_types(path)
    if not available():
        return False
    return credentials_state(path)["state"] != "none"


def _png_chunk_types(path: Path) -> list[bytes]:
    kinds = []
    with open(path, "rb") as handle:
        handle.seek(8)
        while len(kinds) < 100_000:
            head = handle.read(8)
            if len(head) < 8:
                break
            (length,) = struct.unpack(">I", head[:4])
            kinds.append(head[4:8])
            if head[4:8] == b"IEND":
                break
            handle.seek(length + 4, os.SEEK_CUR)
    return kinds


def credentials_state(path: str | Path) -> dict:
    """``{"state": none | valid | valid-untrusted-signer | invalid | unchecked, ...}`` for ``path``.

    ``unchecked``: a manifest is present but c2pa-python is not installed to validate it.
    """
    path = Path(path)
    if not available():
        present = b"caBX" in _png_chunk_types(path) if path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" else None
        return {"state": "unchecked" if present else "none" if present is False else "unknown",
                "note": f"c2pa-python not installed to validate ({INSTALL_HINT})"}
    import c2pa  # optional package, after available()

    try:
        with open(path, "rb") as stream, c2pa.Reader(_format(path), stream) as reader:
            report = json.loads(reader.json())
            state = reader.get_validation_state()
    except c2pa.C2paError as exc:
        text = _first_line(exc)
        if "ManifestNotFound" in exc.__class__.__name__ or "no JUMBF" in text or "not found" in text.lower():
            return {"state": "none"}
        return {"state": "invalid", "errors": [text]}
    return summarize(report, state)


def summarize(report: dict, state: str | None) -> dict:
    """The parts of a c2pa-python reader report that matter to a user."""
    active = report.get("manifests", {}).get(report.get("active_manifest") or "", {})
    failures = [f.get("code", "") for f in ((report.get("validation_results") or {}).get("activeManifest") or {})
                .get("failure", [])]
    failures += [s.get("code", "") for s in report.get("validation_status") or [] if s.get("code") not in failures]
    untrusted = {"signingCredential.untrusted"}
    others = [code for code in failures if code not in untrusted]
    if others:
        verdict = "invalid"
    elif failures:
        verdict = "valid-untrusted-signer"
    else:
        verdict = "valid" if state in ("Valid", "Trusted", None) else str(state).lower()
    actions = []
    recipe = None
    for assertion in active.get("assertions", []):
        if assertion.get("label", "").startswith("c2pa.actions"):
            actions += assertion.get("data", {}).get("actions", [])
        elif assertion.get("label") == RECIPE_ASSERTION:
            recipe = assertion.get("data")
    return {
        "state": verdict,
        "validation_state": state,
        "failures": failures,
        "signer": (active.get("signature_info") or {}).get("issuer"),
        "actions": [{k: a.get(k) for k in ("action", "digitalSourceType") if a.get(k)} for a in actions],
        "ingredients": [{"title": i.get("title"), "relationship": i.get("relationship")}
                        for i in active.get("ingredients", [])],
        "recipe": recipe,
    }
