"""The test cluster's certificate authority: a CA made per start, the API server's serving certificate and a client
certificate per component (and the node's, from the same CA), and kubeconfigs for them."""

from __future__ import annotations

import base64
import datetime
import ipaddress
from pathlib import Path
from typing import Any

import yaml

# The API server answers to these names and to 127.0.0.1 and the first address of the Services' range.
API_SERVER_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local")
# Every component the control plane runs with its own client certificate: (file, common name, organisation).
COMPONENTS = (("admin", "metalmart-admin", "system:masters"), ("kwok", "kwok", "system:masters"),
              ("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"),
              ("controller-manager", "system:kube-controller-manager", None),
              ("scheduler", "system:kube-scheduler", None))


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str, org: str | None = None) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def authority(where: Path, service_cidr: str) -> None:
    """A CA, the API server's serving certificate, a client certificate per component and the service-account key
    pair, made for this run in `where`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    where.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("metalmart-test-ca")).issuer_name(_name("metalmart-test-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (where / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (where / "ca.key").write_bytes(_key_pem(ca_key))
    issue(where, where, "apiserver", "kube-apiserver", server_for=service_cidr)
    for file, cn, org in COMPONENTS:
        issue(where, where, file, cn, org)
    sa_key = ec.generate_private_key(ec.SECP256R1())
    (where / "sa.key").write_bytes(_key_pem(sa_key))
    (where / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def issue(ca_dir: Path, where: Path, file: str, cn: str, org: str | None = None,
          server_for: str | None = None) -> None:
    """A certificate (and key) signed by the CA in `ca_dir`, as `where/<file>.crt|.key`: a client's, or the API
    server's own (`server_for`: the Services' range, whose first address is the API server's)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    where.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(_name(cn, org)).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server_for
                                                     else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False))
    if server_for:
        ips = [ipaddress.ip_address("127.0.0.1"), next(ipaddress.ip_network(server_for).hosts())]
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(d) for d in API_SERVER_NAMES] + [x509.IPAddress(i) for i in ips]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    (where / f"{file}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (where / f"{file}.key").write_bytes(_key_pem(key))


def kubeconfig(pki: Path, user: str, server: str, context: str) -> str:
    """A kubeconfig for `user`'s client certificate in `pki`, with the CA beside it."""
    def b64(file: str) -> str:
        return base64.b64encode((pki / file).read_bytes()).decode()

    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": context, "preferences": {},
        "clusters": [{"name": context, "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")}}],
        "users": [{"name": f"{context}-{user}", "user": {"client-certificate-data": b64(f"{user}.crt"),
                                                         "client-key-data": b64(f"{user}.key")}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": f"{context}-{user}"}}],
    })
