"""A throwaway certificate authority and the TLS settings of a service that uses it."""

from __future__ import annotations

import subprocess
from pathlib import Path

#: The only name the ``pki`` fixture's ``named`` certificate carries.
PKI_NAMED_HOST = "service.taskmill.test"


def tls_env(pki: dict[str, Path], name: str) -> dict[str, str]:
    """The ``TASKMILL_TLS_*`` variables of a service using the ``pki`` fixture's ``name``
    certificate (``server``, ``client`` or ``named``), its key and the CA."""
    return {
        "TASKMILL_TLS_CERT": str(pki[f"{name}_cert"]),
        "TASKMILL_TLS_KEY": str(pki[f"{name}_key"]),
        "TASKMILL_TLS_CA": str(pki["ca"]),
    }


def make_pki(folder: Path) -> dict[str, Path]:
    """Writes the ``pki`` fixture's CA, certificates and keys into ``folder``."""
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    _openssl(
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-nodes", "-days", "1"),
        *("-subj", "/CN=taskmill test CA", "-keyout", ca_key, "-out", ca),
    )
    files = {"ca": ca}
    for name in ("server", "client"):
        files[f"{name}_cert"], files[f"{name}_key"] = _signed(folder, ca, ca_key, name)
    named = _signed(folder, ca, ca_key, "named", f"DNS:{PKI_NAMED_HOST}")
    files["named_cert"], files["named_key"] = named
    return files


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _signed(
    folder: Path, ca: Path, ca_key: Path, name: str, names: str = "IP:127.0.0.1, DNS:localhost"
) -> tuple[Path, Path]:
    # Services are servers and clients of each other: one certificate does both.
    key, csr, cert, ext = (folder / f"{name}.{s}" for s in ("key", "csr", "pem", "ext"))
    ext.write_text(f"subjectAltName = {names}\nextendedKeyUsage = serverAuth, clientAuth\n")
    _openssl(
        *("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-nodes", "-subj", f"/CN={name}"),
        *("-keyout", key, "-out", csr),
    )
    _openssl(
        *("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial"),
        *("-days", "1", "-sha256", "-extfile", ext, "-out", cert),
    )
    return cert, key
