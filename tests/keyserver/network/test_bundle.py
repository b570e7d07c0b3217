"""Deployment bundles (``network plan``): each site gets its own part of the PKI only, and
configs that point at the hosts file's addresses."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from keyserver.cli import main
from keyserver.network.bundle import BundleError, default_hosts, parse_hosts, write_bundles
from keyserver.topology import load_topology

HOSTS = """
# site        address
beijing   192.0.2.10
langfang  192.0.2.11   # a comment
tianjin   kms.tianjin.example
qingxian  2001:db8::4
"""


def _cn(pem: Path) -> str:
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _sans(pem: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(
        ext.get_values_for_type(x509.DNSName)
    )


def test_each_bundle_holds_its_own_keys_only_and_configs_point_at_the_hosts(
    tmp_path: Path,
) -> None:
    topo = load_topology("hefei-metro")  # 8 sites, chords: several links per site
    lines = [f"{n} 198.51.100.{i + 1}" for i, n in enumerate(topo.node_ids())]
    hosts = parse_hosts("\n".join(lines), topo)
    bundles = write_bundles(topo, tmp_path / "out", hosts, Path("/opt/qkd"))
    assert {b.node for b in bundles} == set(topo.node_ids())
    for b in bundles:
        mine = {b.node} | {
            f"QKD-{link.id}-{'tx' if link.a == b.node else 'rx'}" for link in topo.links_of(b.node)
        }
        mine |= {s.id for s in topo.saes if s.node == b.node}
        keys = sorted(b.directory.rglob("*.key"))
        assert keys, b.node
        for key in keys:
            assert key.name != "ca.key"  # no CA key leaves the operator
            assert _cn(key.with_suffix(".pem")) in mine, (b.node, key)  # no other site's key
            assert key.stat().st_mode & 0o077 == 0
        links = {p.stem for p in (b.directory / "links").iterdir()}
        assert links == {link.id for link in topo.links_of(b.node)}
        node = tomllib.loads((b.directory / "nodes" / f"{b.node}.toml").read_text())
        assert node["sae_api"]["host"] == node["node_api"]["host"] == hosts[b.node]
        assert {n["url"] for n in node["nodes"]} == {
            f"https://{hosts[n['id']]}:{n['url'].rsplit(':', 1)[1]}" for n in node["nodes"]
        }
        assert node["sae_api"]["cert"].startswith("/opt/qkd/pki/")
        assert hosts[b.node] in _sans(b.directory / "pki" / "node" / f"{b.node}.pem")
        for mod in (b.directory / "modules").glob("*.toml"):
            m = tomllib.loads(mod.read_text())
            assert m["northbound"]["host"] == hosts[b.node]
            link = topo.link(m["module"]["link"])
            receiver = hosts[link.b]  # the receiver listens, the transmitter dials it
            assert m["quantum_channel"]["address"].rsplit(":", 1)[0] == receiver
            assert m["classical_channel"]["address"].rsplit(":", 1)[0] == receiver
            assert m["classical_channel"]["initial_auth_key"].startswith("/opt/qkd/links/")
        assert "/opt/qkd/nodes/" in (b.directory / "start.sh").read_text()
    # the operator's copy keeps the CA keys
    assert (tmp_path / "out" / "operator" / "pki" / "node-ca" / "ca.key").exists()


def test_hosts_file_format_and_its_errors() -> None:
    topo = load_topology("beijing-hefei")
    small = topo.__class__(topo.name, "", topo.nodes[:4], (), ())
    got = parse_hosts(HOSTS, small)
    assert got == {
        "beijing": "192.0.2.10",
        "langfang": "192.0.2.11",
        "tianjin": "kms.tianjin.example",
        "qingxian": "2001:db8::4",
    }
    with pytest.raises(BundleError, match="no address for qingxian"):
        parse_hosts("beijing 1.2.3.4\nlangfang 1.2.3.5\ntianjin 1.2.3.6", small)
    with pytest.raises(BundleError, match="line 1: 'paris' is not a node"):
        parse_hosts("paris 1.2.3.4", small)
    with pytest.raises(BundleError, match="twice"):
        parse_hosts("beijing 1.2.3.4\nbeijing 1.2.3.5", small)
    with pytest.raises(BundleError, match="neither an IP"):
        parse_hosts("beijing 1.2.3.400", small)
    with pytest.raises(BundleError, match="<node-id> <address>"):
        parse_hosts("beijing", small)
    assert list(default_hosts(small).values())[:2] == ["10.200.0.1", "10.200.0.2"]


@given(st.text(max_size=200))
def test_hosts_parser_accepts_or_refuses_with_a_bundle_error(text: str) -> None:
    topo = load_topology("pair")
    try:
        got = parse_hosts(text, topo)
    except BundleError:
        return
    assert set(got) == set(topo.node_ids())


def test_plan_command_refuses_a_used_directory_and_a_bad_hosts_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    (tmp_path / "hosts").write_text("KME-A 10.0.0.1\n")

    def run(*args: str) -> tuple[int, str]:
        rc = main(["network", "plan", "--topology", "pair", *args])
        return rc, capsys.readouterr().err

    rc, err = run("--out", str(tmp_path / "used"))
    assert rc == 2 and "not empty" in err and err.count("\n") == 1
    rc, err = run("--out", str(tmp_path / "new"), "--hosts", str(tmp_path / "hosts"))
    assert rc == 2 and "no address for KME-B" in err
    assert not (tmp_path / "new").exists()
    rc, err = run("--out", str(tmp_path / "ok"))
    assert rc == 0 and (tmp_path / "ok" / "KME-A" / "start.sh").exists()
