"""The chart's tenancy switches: shared Secrets say with whom, insecure TLS is opt-in."""

from __future__ import annotations

from tests.unit.test_chart import of_kind, only, render

TOKEN = (
    "proxmox.credentials.create=true",
    "proxmox.credentials.tokenId=pm@pve!op",
    "proxmox.credentials.tokenSecret=s3cret",
)


def _args(*sets: str) -> list[str]:
    container = only(render(sets=sets), "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    return list(container["args"])


def test_insecure_tls_is_refused_unless_the_chart_allows_it() -> None:
    assert "--allow-insecure-tls" not in _args()
    assert "--allow-insecure-tls" in _args("operator.allowInsecureTLS=true")


def test_the_chart_secrets_are_shared_only_with_the_namespaces_named() -> None:
    (secret,) = of_kind(render(sets=TOKEN), "Secret")
    assert "proxmigrate.dev/allowed-namespaces" not in (secret["metadata"].get("annotations") or {})
    (secret,) = of_kind(render(sets=(*TOKEN, "proxmox.shareWithNamespaces={a,b}")), "Secret")
    assert secret["metadata"]["annotations"]["proxmigrate.dev/allowed-namespaces"] == "a,b"
