"""``qkd-keyserver network`` (whole networks), ``network status|eve``, ``demo``, ``bench``."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any


def command_group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The subcommands of group `name` (``bench``), created by whichever layer comes first."""
    p = sub.choices.get(name)
    if p is None:
        p = sub.add_parser(name, help=help)
        p.set_defaults(_group=p.add_subparsers(dest=f"{name}_command", required=True))
    group: argparse._SubParsersAction[argparse.ArgumentParser] = p.get_default("_group")
    return group


def _cmd_demo(args: argparse.Namespace) -> int:
    from keyserver.network.demo import Demo, DemoOptions

    opts = DemoOptions(
        directory=Path(args.dir).resolve(),
        port_a=args.port_a,
        port_b=args.port_b,
        distance_km=args.distance_km,
        eve_fraction=args.eve_fraction,
        seed=args.seed,
        max_key_count=args.max_key_count,
    )
    if not 0.0 <= opts.eve_fraction <= 1.0:
        print("qkd-keyserver demo: --eve-fraction must be within 0..1", file=sys.stderr)
        return 2
    if not 0.0 <= opts.distance_km <= 500:
        print("qkd-keyserver demo: --distance-km must be within 0..500", file=sys.stderr)
        return 2
    if opts.max_key_count < 1:
        print("qkd-keyserver demo: --max-key-count must be >= 1", file=sys.stderr)
        return 2
    return Demo(opts).run()


def _eve(values: list[str]) -> dict[str, float]:
    out = {}
    for v in values:
        link, _, frac = v.partition("=")
        try:
            f = float(frac)
        except ValueError:
            raise SystemExit(f"qkd-keyserver network: --eve {v!r}: use LINK=FRACTION") from None
        if not link or not 0 <= f <= 1:
            raise SystemExit(f"qkd-keyserver network: --eve {v!r}: use LINK=FRACTION (0..1)")
        out[link] = f
    return out


def _cmd_network(args: argparse.Namespace) -> int:
    if args.action == "status":
        return _cmd_status(args)
    if args.action == "eve":
        return _cmd_eve(args)
    if args.action == "map":
        return _cmd_map(args)
    if args.action == "plan":
        return _cmd_plan(args)
    from keyserver.configfile import ConfigError
    from keyserver.network.foreground import run_foreground
    from keyserver.network.launcher import Launcher
    from keyserver.network.plan import Options, make_plan
    from keyserver.topology import load_topology, with_fidelity

    prog = "qkd-keyserver network"
    if args.topology is None or args.dir is None:
        print(
            f"{prog}: --topology and --dir are required (or use `network status|eve`)",
            file=sys.stderr,
        )
        return 2
    try:
        topo = load_topology(args.topology)
        if args.fidelity is not None:
            topo = with_fidelity(topo, args.fidelity)
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    eve = _eve(args.eve or [])
    unknown = sorted(set(eve) - {x.id for x in topo.links})
    if unknown:
        print(
            f"{prog}: --eve names link {unknown[0]!r}, not in topology {topo.name}", file=sys.stderr
        )
        return 2
    if not 1 <= args.multipath <= 8:
        print(f"{prog}: --multipath must be within 1..8", file=sys.stderr)
        return 2
    opts = Options(
        seed=args.seed,
        eve=eve,
        multipath=args.multipath,
        max_key_count=args.max_key_count,
        site_hosts=args.site_hosts,
    )
    if args.site_hosts and args.netns:
        print(
            f"{prog}: --site-hosts does not work with --netns yet: leave one out", file=sys.stderr
        )
        return 2
    if args.loss and not args.netns:
        print(f"{prog}: --loss applies to the links between sites of --netns", file=sys.stderr)
        return 2
    if not 0 <= args.loss < 1:
        print(
            f"{prog}: --loss must be at least 0 and below 1 (a probability per packet)",
            file=sys.stderr,
        )
        return 2
    if args.netns:
        from keyserver.network.netns import NetnsError
        from keyserver.network.netnslauncher import netns_launcher

        try:
            launcher: Launcher = netns_launcher(Path(args.dir), topo, opts, loss=args.loss)
        except NetnsError as e:
            print(f"{prog}: {e}", file=sys.stderr)
            return 1
    else:
        launcher = Launcher(make_plan(Path(args.dir), topo, opts))

    def outputs(la: Launcher) -> tuple[Path, dict[str, Any]]:
        path = la.write_info()
        extra = {}
        if args.netns:
            from keyserver.network.netnslauncher import describe

            extra = {"netns": describe(la.info())}
        return path, {
            "network_json": str(path),
            "topology": topo.name,
            "nodes": len(topo.nodes),
            "links": len(topo.links),
            **extra,
        }

    def banner(la: Launcher, path: Path) -> list[str]:
        from keyserver.consolescript import script_command

        saes = ", ".join(f"{s.id}@{s.node}" for s in topo.saes)
        keyserver = script_command("qkd-keyserver")
        return [
            "",
            f"network {topo.name} ready: {len(topo.nodes)} nodes, {len(topo.links)} "
            f"links, {topo.total_km():g} km of fibre; SAEs {saes}",
            f"  profiles in {la.plan.directory / 'saes'}; details in {path}",
            f"  from another terminal: {keyserver} network status --dir {args.dir}",
            *(_netns_banner(la) if args.netns else []),
            "  Ctrl-C stops every module and node.",
            "",
        ]

    return run_foreground(
        launcher,
        prog=prog,
        ready_event="network_ready",
        outputs=outputs,
        banner=banner,
        exit_on_child_death=False,
    )


def _cmd_plan(args: argparse.Namespace) -> int:
    from keyserver.configfile import ConfigError
    from keyserver.network.bundle import BundleError, parse_hosts, write_bundles
    from keyserver.topology import load_topology

    prog = "qkd-keyserver network plan"
    try:
        topo = load_topology(args.topology)
        hosts = None
        if args.hosts is not None:
            try:
                text = Path(args.hosts).read_text(encoding="utf-8")
            except OSError as e:
                raise BundleError(
                    f"cannot read the hosts file {args.hosts}: {e.strerror}"
                ) from None
            hosts = parse_hosts(text, topo)
        bundles = write_bundles(topo, Path(args.out), hosts, Path(args.install_dir))
    except (ConfigError, BundleError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    print(
        f"{topo.name}: {len(bundles)} site bundles in {out} (the operator's copy, with the CA "
        f"keys, in {out / 'operator'}: keep it off the sites)"
    )
    for b in bundles:
        print(
            f"  {b.node:<16} {b.address:<16} {b.directory}  -> copy to {args.install_dir} on "
            f"{b.address}, run start.sh"
        )
    return 0


def _netns_banner(la: Any) -> list[str]:
    """The namespaces, and a call across the network with its terminals in their sites'."""
    from keyserver.network.netnslauncher import describe
    from keyserver.network.plan import default_peer

    info = la.info()
    topo, d = la.plan.topology, la.plan.directory
    lines = [f"  {describe(info)}"]
    callee = next((s for s in topo.saes if s.id == "bob"), topo.saes[-1] if topo.saes else None)
    if callee is None:
        return lines
    from keyserver.consolescript import script_command

    qphone = script_command("qphone")
    caller = default_peer(topo, callee.id)
    sites = info["netns"]["sites"]
    b, a = sites[callee.node], sites[topo.sae_node(caller) or callee.node]
    listen = f"{b['address']}:7000"
    lines += [
        f"  a call {caller} -> {callee.id}, each terminal in its site's namespace "
        "(--mode aes or otp):",
        f"    ip netns exec {b['ns']} {qphone} answer --listen {listen} "
        f"--ice-host {b['address']} --profile {d / 'saes' / f'{callee.id}.toml'}",
        f"    ip netns exec {a['ns']} {qphone} call {listen} --ice-host {a['address']} "
        f"--profile {d / 'saes' / f'{caller}.toml'} --mode otp",
    ]
    return lines


def _load_info(prog: str, directory: str | None) -> dict[str, Any]:
    if directory is None:
        raise SystemExit(f"{prog}: --dir is required")
    path = Path(directory) / "network.json"
    if not path.exists():
        path = Path(directory) / "demo.json"
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        raise SystemExit(
            f"{prog}: no running network in {directory} (no network.json): start "
            f"`qkd-keyserver network --topology NAME --dir {directory}`"
        ) from None
    return info


def _cmd_status(args: argparse.Namespace) -> int:
    # through the launcher this imports only the socket and the rendering: no TLS, no HTTP
    # client, no cryptography (tests/keyserver/network/test_status_imports.py)
    from keyserver.network.status import render
    from keyserver.network.statussocket import ask

    info = _load_info("qkd-keyserver network status", args.dir)
    # the launcher answers from its cache of every node's state; if none answers, ask the nodes
    summary = ask(Path(args.dir))
    if summary is None:
        from keyserver.network.stateclient import StateClient
        from keyserver.network.status import collect, summarise
        from keyserver.pki.certificates import CertPaths

        client = StateClient(
            Path(info["node_ca_cert"]),
            CertPaths(Path(info["admin"]["node_cert"]), Path(info["admin"]["node_key"])),
        )
        summary = summarise(info, collect(info, client))
    if args.json:
        print(json.dumps(summary))
    else:
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        print("\n".join(render(summary, width)))
        if "netns" in info:
            from keyserver.network.netnslauncher import describe

            print(describe(info))
    return 0 if all(v["up"] for v in summary["nodes"].values()) else 1


def _cmd_map(args: argparse.Namespace) -> int:
    from keyserver.configfile import ConfigError
    from keyserver.network.map import draw, map_model, topology_of_network
    from keyserver.topology import Topology, load_topology

    prog = "qkd-keyserver network map"
    out = Path(args.out)
    if out.suffix.lower() != ".png" or not out.resolve().parent.is_dir():
        print(
            f"{prog}: --out {args.out}: name a .png file in an existing directory", file=sys.stderr
        )
        return 2
    if args.dir is None and args.topology is None:
        print(
            f"{prog}: give --dir DIR (a running network) or --topology NAME (its plan)",
            file=sys.stderr,
        )
        return 2
    base: Topology | None = None
    try:
        if args.topology is not None:
            base = load_topology(args.topology)
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    summary = None
    if args.dir is not None:
        from keyserver.network.stateclient import StateClient
        from keyserver.network.status import collect, summarise
        from keyserver.pki.certificates import CertPaths

        info = _load_info(prog, args.dir)
        if base is None:
            try:
                base = load_topology(str(info.get("topology")))
            except ConfigError:
                base = None  # not a shipped name: the map is laid out as a graph
        topo = topology_of_network(info, base)
        client = StateClient(
            Path(info["node_ca_cert"]),
            CertPaths(Path(info["admin"]["node_cert"]), Path(info["admin"]["node_key"])),
        )
        summary = summarise(info, collect(info, client))
    else:
        assert base is not None
        topo = base
    draw(map_model(topo, summary), out)
    print(
        json.dumps(
            {
                "map": str(out),
                "topology": topo.name,
                "nodes": len(topo.nodes),
                "links": len(topo.links),
                "live": summary is not None,
            }
        )
    )
    return 0


def _cmd_eve(args: argparse.Namespace) -> int:
    from keyserver.network.stateclient import set_eve
    from keyserver.pki.certificates import CertPaths

    prog = "qkd-keyserver network eve"
    info = _load_info(prog, args.dir)
    if args.link not in info["links"]:
        print(f"{prog}: no link {args.link!r}; links: {', '.join(info['links'])}", file=sys.stderr)
        return 2
    if args.fraction is None or not 0 <= args.fraction <= 1:
        print(f"{prog}: --fraction must be within 0..1", file=sys.stderr)
        return 2
    mid = info["links"][args.link]["eve_module"]
    admin = CertPaths(Path(info["admin"]["module_cert"]), Path(info["admin"]["module_key"]))
    try:
        got = set_eve(
            info["modules"][mid]["url"], mid, Path(info["module_ca_cert"]), admin, args.fraction
        )
    except OSError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"link": args.link, "module": mid, **got}))
    return 0


def _cmd_bench_network(args: argparse.Namespace) -> int:
    from keyserver.network.bench import run_bench_network

    return run_bench_network(args)


def _cmd_bench_pair(args: argparse.Namespace) -> int:
    from keyserver.network.pairbench import bench_running_demo, bench_topology, summary_lines

    if args.seconds <= 0 or args.workers < 1 or args.rounds < 1 or args.relay_requests < 1:
        print(
            "qkd-keyserver bench pair: --seconds must be > 0, --workers, --rounds and "
            "--relay-requests >= 1",
            file=sys.stderr,
        )
        return 2
    if args.dir is not None:
        results = [
            bench_running_demo(
                Path(args.dir).resolve(),
                args.seconds,
                args.workers,
                args.size,
                args.relay_requests,
                args.rounds,
            )
        ]
    else:
        results = [
            bench_topology(
                t,
                None,
                args.seconds,
                args.workers,
                args.size,
                args.relay_requests,
                args.rounds,
                args.fidelity,
                args.seed,
            )
            for t in args.topology.split(",")
        ]
    if args.json:
        print(
            json.dumps(
                {"comparisons": results, "command": " ".join(["qkd-keyserver", *sys.argv[1:]])}
            )
        )
    else:
        for r in results:
            print("\n".join(summary_lines(r)))
    return (
        0 if all(r["real"]["errors"] == 0 and r["real"]["duplicates"] == 0 for r in results) else 1
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("demo", help="two KMS nodes and their QKD link (the pair topology)")
    d.add_argument("--dir", required=True, help="directory for PKI, configs, data, demo.json")
    d.add_argument("--port-a", type=int, default=8441, help="SAE API of KME-A (default 8441)")
    d.add_argument("--port-b", type=int, default=8442, help="SAE API of KME-B (default 8442)")
    d.add_argument("--distance-km", type=float, default=10.0, help="fibre length (default 10)")
    d.add_argument(
        "--eve-fraction",
        type=float,
        default=0.0,
        help="intercept-resend on this fraction of pulses, 0..1 (default 0)",
    )
    d.add_argument("--seed", type=int, default=None, help="seeded QKD simulation (testing)")
    d.add_argument(
        "--max-key-count",
        type=int,
        default=16_384,
        help="link-key stock cap per direction, keys of 256 bits (default 16384)",
    )
    d.set_defaults(func=_cmd_demo)

    n = sub.add_parser("network", help="a whole QKD network: every module and node, live state")
    n.add_argument(
        "--topology", help="shipped topology name (pair, beijing-hefei, hefei-metro) or a TOML file"
    )
    n.add_argument("--dir", help="network directory")
    n.add_argument("--seed", type=int, default=None, help="seeded QKD simulation (testing)")
    n.add_argument(
        "--fidelity",
        choices=("emulated", "physics"),
        default=None,
        help="simulate every link this way, whatever the topology says: emulated "
        "(blocks sampled from the physics model, lean) or physics (per pulse); "
        "docs/network.md",
    )
    n.add_argument(
        "--site-hosts",
        action="store_true",
        help="one process per site for its emulated modules (where it has two or "
        "more): less memory for large networks; docs/network.md",
    )
    n.add_argument(
        "--multipath",
        type=int,
        default=1,
        help="XOR shares over k node-disjoint routes (default 1)",
    )
    n.add_argument(
        "--eve",
        action="append",
        metavar="LINK=FRACTION",
        help="start with an eavesdropper on a link (repeatable)",
    )
    n.add_argument(
        "--max-key-count",
        type=int,
        default=16_384,
        help="link-key stock cap per direction, keys of 256 bits (default 16384)",
    )
    n.add_argument(
        "--netns",
        action="store_true",
        help="every site in its own network namespace, joined with the fibre's "
        "delay (needs root; docs/network.md)",
    )
    n.add_argument(
        "--loss",
        type=float,
        default=0.0,
        metavar="P",
        help="with --netns: packet loss probability on every link between sites",
    )
    acts = n.add_subparsers(dest="action", required=False)
    st = acts.add_parser(
        "status",
        help="the state of a running network",
        description="Every link (state, key rate, stock each way, QBER; why "
        "it is down, in full), every node that does not answer, the relays "
        "per SAE pair. Exit 1 if a node does not answer.",
    )
    st.add_argument("--dir", required=True, help="the directory of the running network")
    st.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    mp = acts.add_parser(
        "map",
        help="a PNG map of a running network, or of a topology",
        description="Nodes by lat/lon (or a graph layout), links coloured by "
        "key stock and drawn as wide as their rate, down and alarmed links "
        "marked, the routes the relays took highlighted; with --topology "
        "alone, the plan (links coloured by length).",
    )
    mp.add_argument("--dir", help="the directory of a running network (live map)")
    mp.add_argument(
        "--topology",
        help="shipped topology name or TOML file: the plan alone, or "
        "with --dir where to place the nodes",
    )
    mp.add_argument("--out", required=True, help="the PNG file to write")
    ev = acts.add_parser("eve", help="put an eavesdropper on a link (or take it off: 0)")
    ev.add_argument("--dir", required=True, help="the directory of the running network")
    ev.add_argument(
        "--link",
        required=True,
        help="the link's ID, as `network status` lists it (e.g. taian-qufu)",
    )
    ev.add_argument(
        "--fraction",
        type=float,
        required=True,
        help="intercept-resend on this fraction of the link's pulses, 0..1 (0 takes "
        "Eve off); she shows in the QBER of the link's next blocks",
    )
    pl = acts.add_parser("plan", help="one deployment bundle per site (sites on their own hosts)")
    pl.add_argument("--topology", required=True, help="shipped topology name or a TOML file")
    pl.add_argument("--out", required=True, help="new directory for the bundles")
    pl.add_argument(
        "--hosts",
        help="file of `<node-id> <address>` lines (default: 10.200.0.1, "
        "10.200.0.2, ... in topology order; docs/network.md)",
    )
    pl.add_argument(
        "--install-dir",
        default="/var/lib/qkd-keyserver",
        help="where the bundles go on the hosts (default /var/lib/qkd-keyserver)",
    )
    n.set_defaults(func=_cmd_network, action=None)

    bench = command_group(sub, "bench", "benchmarks (bench network, bench link, bench pair)")
    from keyserver.qkd.commands import register_bench

    register_bench(bench)
    b = bench.add_parser("network", help="concurrent AES/OTP call key demands over a route")
    b.add_argument(
        "--topology",
        default="beijing-hefei",
        help="shipped topology name or a TOML file (default beijing-hefei)",
    )
    b.add_argument("--dir", required=True, help="work directory (a network is started there)")
    b.add_argument("--from", dest="src", default="alice", help="master SAE (default alice)")
    b.add_argument("--to", dest="dst", default="bob", help="slave SAE (default bob)")
    b.add_argument("--seconds", type=float, default=20.0, help="per load step (default 20)")
    b.add_argument(
        "--seed", type=int, default=1, help="seed of the network's QKD simulation (default 1)"
    )
    b.add_argument(
        "--wait",
        type=float,
        default=900.0,
        help="longest wait for the route to hold key, s (default 900)",
    )
    b.add_argument(
        "--json",
        action="store_true",
        help="one JSON object on stdout (progress events go to stderr)",
    )
    b.add_argument(
        "--footprint",
        action="store_true",
        help="only start-up time to the first key on the farthest route, memory "
        "(PSS) and idle CPU, with the network as `network` starts it",
    )
    b.add_argument(
        "--fidelity",
        choices=("emulated", "physics"),
        default=None,
        help="every link's fidelity (default: the topology's)",
    )
    b.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="with --footprint: measure the CPU again this many seconds later (the links full)",
    )
    b.set_defaults(func=_cmd_bench_network)

    b = bench.add_parser(
        "pair", help="ETSI 014 key pairs/s through real KMS nodes beside a bare mTLS server"
    )
    b.add_argument(
        "--dir",
        default=None,
        help="a running demo's directory (reads demo.json); without it the bench "
        "starts --topology itself",
    )
    b.add_argument(
        "--topology",
        default="pair",
        help="topologies to start, comma-separated: pair (one hop), line5 (four "
        "hops), or a TOML file (default pair)",
    )
    b.add_argument(
        "--fidelity",
        choices=("emulated", "physics"),
        default="emulated",
        help="QKD links of the network the bench starts (default emulated)",
    )
    b.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="how long to draw key pairs, per round and server (default 10)",
    )
    b.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="bare and real runs alternate this many times (default 1)",
    )
    b.add_argument("--workers", type=int, default=6, help="client processes")
    b.add_argument("--size", type=int, default=256, help="key size in bits")
    b.add_argument(
        "--relay-requests",
        type=int,
        default=200,
        help="one-at-a-time enc_keys for the relay time (default 200)",
    )
    b.add_argument("--seed", type=int, default=None, help="seed the QKD links (testing)")
    b.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    b.set_defaults(func=_cmd_bench_pair)
