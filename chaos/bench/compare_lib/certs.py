"""One self-signed certificate for the benchmark domain, used by every server,
so that the TLS figures compare the same key type (ECDSA P-256, as Chorus makes
its own) and the generator verifies each server the same way."""

import subprocess
from pathlib import Path


def make(directory: Path, domain: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    # CA:FALSE: rustls (the generator's TLS) refuses a CA certificate as a
    # server's own, which is what `openssl req -x509` makes by default.
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "30", "-subj", f"/CN={domain}",
         "-addext", f"subjectAltName=DNS:{domain}",
         "-addext", "basicConstraints=critical,CA:FALSE",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key
