"""The ``shoal`` command: run the daemon, check a config, print its schema, plan once.

shoal run -c FILE                  the daemon (exit 2 when the config is invalid or fails preflight)
shoal check-config [--preflight] [-c] FILE
                                   "OK" or every error (path, value, expectation), one line
                                   each, exit 2; checks everything that needs no network:
                                   keys, values, instance types, region, prices;
                                   --preflight: also the files it names, as `run` checks them
shoal config-schema                JSON schema of the config file
shoal demand-schema                JSON schema of PUT /v1/demand's body (docs/demand-api.md)
shoal status [-c FILE | --url URL] [--token-file FILE] [--json] [--plain] [--timeout S]
                                   a running daemon's GET /v1/status as tables (daemon.status)
shoal plan -c FILE --demand FILE [--nodes FILE]
                                   one decision as JSON; nothing launched
shoal simulate -c FILE --trace FILE [--out DIR] [--compare KEY=V1,V2 ...] [--seed N] [-j N]
                                   replay a job trace on the simulated cloud; cost and
                                   waits per config variant, N variants at once in
                                   worker processes (exit 2 on bad input)
shoal slurm-conf -c FILE [--catalogue FILE] [--bin-dir DIR] [--partition NAME]
                                   slurm.conf lines for the node types (daemon.slurm.conf)
shoal slurm-resume|slurm-suspend|slurm-resume-fail [-c FILE] HOSTLIST
                                   Slurm's power-saving programs (daemon.slurm.hook)
shoal cluster launch -c FILE --leader-node-type TYPE [--leader-storage GB] [--owner NAME]
                     [-t KEY=VALUE ...]
shoal cluster destroy -c FILE      create or delete the config's AWS cluster, as Toil's
                                   launch-cluster and destroy-cluster (exit 1 when it
                                   already exists / does not exist)

The modules behind the other commands (pydantic, asyncio, the daemon) are imported when a
command needs them, so the Slurm hooks start in milliseconds. ``simulate`` needs the
``[simulate]`` extra (matplotlib, rich), which the daemon never imports; without it the
command says how to install it and exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.daemon.slurm.hook import COMMANDS as SLURM_HOOKS  # stdlib only: cheap to import

if TYPE_CHECKING:
    from shoal.daemon.config import ConfigError, ShoalConfig
    from shoal.providers.workers import WorkerSecrets


__all__ = ["main"]

log = logging.getLogger(__name__)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("shoal")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def _print_errors(exc: ConfigError) -> None:
    print(f"invalid config {exc.source}:", file=sys.stderr)
    for issue in exc.errors:
        print(f"  {issue}", file=sys.stderr)


def _load(path: str) -> ShoalConfig | None:
    from shoal.daemon.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        _print_errors(exc)
        return None


def _preflight(config: ShoalConfig, source: str) -> WorkerSecrets | None:
    """The workers' secrets, read once, when the files and directories the config names are
    usable here; else None, once it printed why."""
    from shoal.daemon.config import ConfigError
    from shoal.daemon.config.preflight import check

    issues, secrets = check(config)
    if issues:
        _print_errors(ConfigError(source, issues))
        return None
    return secrets


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    secrets = None if config is None else _preflight(config, args.config)
    if config is None or secrets is None:
        return 2
    from shoal.daemon import service

    return service.run(config, Path(args.config), secrets)


def _cmd_check(args: argparse.Namespace) -> int:
    """Validate the file; check the instance types, region and zones it names against what
    the provider ships (``config.catalogue``), and that cost features have a price for every
    known type; all without calling a cloud, the same on any machine. ``--preflight`` also
    checks the files and directories it names, as ``shoal run`` does at start."""
    from shoal.daemon.config import ConfigError
    from shoal.daemon.config.catalogue import catalogue_issues
    from shoal.daemon.service import price_issues, unpriced_offline

    path = args.config or args.file
    if path is None or (args.config and args.file):
        print("shoal check-config: give the config file once: FILE or -c FILE", file=sys.stderr)
        return 2
    config = _load(path)
    if config is None or (args.preflight and _preflight(config, path) is None):
        return 2
    where = {"simulated": "the simulated catalogue"}.get(
        config.provider.kind, f"the shipped {config.provider.kind} price table"
    )
    issues = catalogue_issues(config)
    if not any(issue.path == "provider.region" for issue in issues):  # else no prices at all
        unknown = {issue.value for issue in issues}  # an unknown type is reported once
        unpriced = [name for name in unpriced_offline(config) if name not in unknown]
        issues += price_issues(config, unpriced, where)
    if issues:
        _print_errors(ConfigError(path, issues))
        return 2
    print("OK")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from shoal.daemon.config import ShoalConfig

    json.dump(ShoalConfig.model_json_schema(), sys.stdout, indent=2)
    print()
    return 0


def _cmd_demand_schema(args: argparse.Namespace) -> int:
    """The model ``PUT /v1/demand`` validates with (``parse_demand``), so they cannot drift."""
    from shoal.daemon.demand import DemandBody

    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **DemandBody.model_json_schema(),
    }
    json.dump(schema, sys.stdout, indent=2)
    print()
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    """Ask the daemon the config (its api.listen and api.token_file) or --url names."""
    from shoal.daemon.status import StatusError, daemon_url, fetch, print_status
    from shoal.daemon.wiring import api_token

    token = None
    if args.url is not None:
        base = args.url
    elif args.config is not None:
        config = _load(args.config)
        if config is None:
            return 2
        from shoal.daemon.wiring import api_token

        base = daemon_url(config.api.listen)
        try:
            token = api_token(config)
        except OSError as exc:
            print(f"shoal status: cannot read api.token_file: {exc}", file=sys.stderr)
            return 2
    else:
        from shoal.daemon.config import ApiConfig

        base = daemon_url(ApiConfig().listen)
    if args.token_file is not None:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            print(f"shoal status: cannot read the token: {exc}", file=sys.stderr)
            return 2
    try:
        text, status = fetch(base, token, timeout=args.timeout)
    except StatusError as exc:
        print(f"shoal status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        print_status(status, base, sys.stdout, plain=args.plain)
    return 0


# --- plan ----------------------------------------------------------------------------------


async def _plan_controller(config: ShoalConfig, catalogue: str | None) -> Any:
    """The daemon's controller (``service.build_controller``) over the configured provider,
    which is only asked for its catalogue; nothing is launched. ``--catalogue`` replaces the
    simulated cloud's shipped catalogue."""
    from shoal.daemon.service import build_controller, build_provider
    from shoal.providers.simulated import SimulatedProvisioner, load_catalogue
    from shoal.runtime.clock import SystemClock

    clock = SystemClock()
    provider = build_provider(config, clock)
    if catalogue is not None:
        if not isinstance(provider, SimulatedProvisioner):
            raise ValueError("--catalogue applies to the simulated provider only")
        provider.types = load_catalogue(catalogue)
    try:
        return await build_controller(config, provider, clock, durable=False)
    finally:
        await provider.close()


def _read_structured(path: str) -> Any:
    import yaml

    text = Path(path).read_text()
    return yaml.safe_load(text) if path.endswith((".yaml", ".yml")) else json.loads(text)


def _nodes(path: str | None, config: ShoalConfig, now: float) -> tuple[Any, ...]:
    """``--nodes``: a JSON/YAML list of {id, node_type, instance_type?, state?, launched_at?|age?,
    preemptible?, static?, zone?}."""
    from shoal.scaler.model import NodeInfo, NodeState

    if path is None:
        return ()
    rows = _read_structured(path)
    by_name = {e.type: e for e in config.node_types}
    out = []
    for row in rows:
        entry = by_name.get(row.get("node_type", ""))
        launched = row.get("launched_at")
        if launched is None:
            launched = now - float(row.get("age", 0))
        out.append(
            NodeInfo(
                id=str(row["id"]),
                node_type=row.get("node_type", ""),
                instance_type=row.get("instance_type")
                or (entry.instance_types[0] if entry else "unknown"),
                zone=row.get("zone", config.provider.launch_zones[0]),
                preemptible=bool(
                    row.get("preemptible", entry is not None and entry.bid is not None)
                ),
                state=NodeState(row.get("state", "ready")),
                launched_at=float(launched),
                static=bool(row.get("static", False)),
            )
        )
    return tuple(out)


def _cmd_plan(args: argparse.Namespace) -> int:
    import asyncio

    import yaml
    from shoal.daemon.demand import DemandError, parse_demand
    from shoal.daemon.views import plan_json
    from shoal.providers.errors import ProviderError
    from shoal.scaler.model import PlannerState, Snapshot

    config = _load(args.config)
    if config is None:
        return 2
    try:
        update = parse_demand(_read_structured(args.demand))
    except DemandError as exc:
        print(f"invalid demand {args.demand}:", file=sys.stderr)
        for message in exc.messages:
            print(f"  {message}", file=sys.stderr)
        return 2
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"cannot read demand {args.demand}: {exc}", file=sys.stderr)
        return 2
    now = time.time() if args.now is None else args.now
    try:
        nodes = _nodes(args.nodes, config, now)
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        print(f"cannot read nodes {args.nodes}: {exc!r}", file=sys.stderr)
        return 2
    try:
        controller = asyncio.run(_plan_controller(config, args.catalogue))
    except (OSError, ValueError, KeyError, ProviderError) as exc:
        where = args.catalogue or f"the {config.provider.kind} provider's catalogue"
        print(f"shoal plan: {exc} (instance types from {where})", file=sys.stderr)
        return 2
    snapshot = Snapshot(demand=update.demand, nodes=nodes)
    result = controller.planner(snapshot, controller.policy, PlannerState(), now)
    json.dump(plan_json(result), sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


def _cmd_slurm_conf(args: argparse.Namespace) -> int:
    """The node, nodeset and partition lines from the policy the daemon would plan with."""
    import asyncio

    from shoal.daemon.slurm.conf import render
    from shoal.providers.errors import ProviderError

    config = _load(args.config)
    if config is None:
        return 2
    if config.slurm is None:
        print(f"shoal slurm-conf: {args.config} has no slurm section", file=sys.stderr)
        return 2
    try:
        controller = asyncio.run(_plan_controller(config, args.catalogue))
        text = render(
            config,
            controller.policy,
            bin_dir=args.bin_dir,
            partition=args.partition,
            source=str(Path(args.config).resolve()),
        )
    except (OSError, ValueError, KeyError, ProviderError) as exc:
        print(f"shoal slurm-conf: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


# The replay's plots and progress bar: the [simulate] extra, which `shoal run` does without.
SIMULATE_EXTRA = ("matplotlib", "rich")


def _cmd_simulate(args: argparse.Namespace) -> int:
    import importlib

    missing = []
    for name in SIMULATE_EXTRA:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        print(
            f"shoal simulate needs {' and '.join(missing)}: pip install 'shoal[simulate]'",
            file=sys.stderr,
        )
        return 2
    from shoal.daemon.simulate import command

    return command.run(args)


def _cmd_cluster(args: argparse.Namespace) -> int:
    """Launch or destroy the config's cluster on AWS (``launchCluster``/``destroyCluster``);
    progress goes to stderr, one line a step."""
    config = _load(args.config)
    if config is None:
        return 2
    if config.provider.kind != "aws":
        print(
            f"shoal cluster: provider kind is {config.provider.kind!r}; "
            "cluster launch and destroy need kind: aws",
            file=sys.stderr,
        )
        return 2
    tags: dict[str, str] = {}
    for tag in getattr(args, "tag", None) or []:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            print(f"shoal cluster: tag {tag!r} is not KEY=VALUE", file=sys.stderr)
            return 2
        tags[key] = value
    leader = getattr(args, "leader_node_type", None)
    if leader is not None:
        from shoal.daemon.config.catalogue import aws_instance_types
        from shoal.daemon.config.suggest import did_you_mean

        if leader not in aws_instance_types():
            hint = did_you_mean(leader, aws_instance_types())
            print(
                f"shoal cluster launch: --leader-node-type {leader!r}: unknown instance type: "
                f"not in EC2's instance types{hint}",
                file=sys.stderr,
            )
            return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    import asyncio

    return asyncio.run(_cluster(args, config, tags))


async def _cluster(args: argparse.Namespace, config: ShoalConfig, tags: dict[str, str]) -> int:
    from shoal.providers.aws import AWSProvisioner
    from shoal.providers.errors import ProviderError

    name = config.cluster_name
    async with AWSProvisioner.from_config(config) as aws:
        try:
            if args.action == "launch":
                if not aws.zones:
                    print("shoal cluster launch: set provider.zones", file=sys.stderr)
                    return 2
                print(
                    f"launching cluster {name}: leader {args.leader_node_type} in {aws.zones[0]}",
                    file=sys.stderr,
                )
                await aws.launchCluster(
                    args.leader_node_type, args.leader_storage, args.owner or "", userTags=tags
                )
                leader = await aws.getLeader()
                print(
                    f"cluster {name} launched: leader {leader.name} ({leader.cloud_state}) "
                    f"at {leader.privateIP or '-'}",
                    file=sys.stderr,
                )
                return 0
            if not await aws.cluster_exists():
                print(
                    f"shoal cluster destroy: cluster {name} does not exist (no instance or "
                    f"security group is tagged with it)",
                    file=sys.stderr,
                )
                return 1
            print(f"destroying cluster {name}", file=sys.stderr)
            await aws.destroyCluster()
            print(f"cluster {name} is gone", file=sys.stderr)
            return 0
        except ProviderError as e:
            print(f"shoal cluster {args.action}: {e}", file=sys.stderr)
            return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shoal", description="Autoscaling daemon for batch clusters."
    )
    parser.add_argument("--version", action="version", version=f"shoal {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", required=True, help="YAML config file")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate a config file; print OK or every error")
    check.add_argument("file", nargs="?", help="YAML config file")
    check.add_argument("-c", "--config", help="YAML config file (as `run -c`)")
    check.add_argument(
        "--preflight",
        action="store_true",
        help="also check, on this machine, the files and directories the config names (token "
        "files, munge key, state_dir), as `shoal run` does at start",
    )
    check.set_defaults(func=_cmd_check)

    schema = sub.add_parser("config-schema", help="print the config file's JSON schema")
    schema.set_defaults(func=_cmd_schema)

    demand_schema = sub.add_parser(
        "demand-schema", help="print the JSON schema of PUT /v1/demand's body"
    )
    demand_schema.set_defaults(func=_cmd_demand_schema)

    status = sub.add_parser(
        "status",
        help="print a running daemon's /v1/status as tables",
        description=(
            "Ask a running daemon for GET /v1/status and print it as tables: nodes by type "
            "and state, demand and its source, the last plan with its reasons, jobs left "
            "waiting, offerings in backoff, the last pass. The daemon is found from the "
            "config (api.listen, api.token_file) or --url (default: the default listen "
            "address). Exit 1 when it cannot be asked."
        ),
    )
    where = status.add_mutually_exclusive_group()
    where.add_argument("-c", "--config", help="the daemon's YAML config file")
    where.add_argument("--url", help="the daemon's base URL, e.g. http://127.0.0.1:8089")
    status.add_argument("--token-file", help="bearer token file (default: api.token_file)")
    status.add_argument("--json", action="store_true", help="print the JSON as the daemon sent it")
    status.add_argument(
        "--plain", action="store_true", help="plain text tables (the default without rich)"
    )
    status.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait (default: %(default)s)"
    )
    status.set_defaults(func=_cmd_status)

    plan = sub.add_parser(
        "plan",
        help="print one scaling decision as JSON (nothing is launched)",
        description=(
            "Plan once for a demand and print launches, drains, terminations, targets, "
            "unschedulable jobs and cost as JSON, as the daemon would decide it. Shapes and "
            "prices come from the configured provider's catalogue (for AWS: "
            "DescribeInstanceTypes and prices); nothing is launched or terminated."
        ),
    )
    plan.add_argument("-c", "--config", required=True, help="YAML config file")
    plan.add_argument(
        "--demand", required=True, help="demand body (JSON or YAML), as PUT /v1/demand"
    )
    plan.add_argument(
        "--nodes",
        help="JSON/YAML list of current nodes: {id, node_type, state (booting|ready|draining), "
        "age seconds or launched_at, static}",
    )
    plan.add_argument(
        "--catalogue",
        default=None,
        help="instance type catalogue JSON for the simulated provider (default: the shipped one)",
    )
    plan.add_argument("--now", type=float, default=None, help="epoch seconds (default: now)")
    plan.set_defaults(func=_cmd_plan)

    import sysconfig

    slurm_conf = sub.add_parser(
        "slurm-conf",
        help="print slurm.conf's node, nodeset and partition lines for the node types",
        description=(
            "Print the slurm.conf lines for the configured node types (for Include, or to "
            "paste): CPUs, RealMemory as the memory shoal's planner packs (less its "
            "overhead), Features (shoal, the type, the instance type, spot or on-demand), "
            "Weight by price (cheapest first), node counts from each type's max; in "
            "power_save mode the power-saving settings with shoal's hooks, in external mode "
            "a NodeSet of dynamic nodes. Shapes and prices come from the provider's "
            "catalogue, as for `shoal plan`."
        ),
    )
    slurm_conf.add_argument("-c", "--config", required=True, help="YAML config file")
    slurm_conf.add_argument(
        "--catalogue",
        default=None,
        help="instance type catalogue JSON for the simulated provider (default: the shipped one)",
    )
    slurm_conf.add_argument(
        "--bin-dir",
        default=sysconfig.get_path("scripts"),
        help="where shoal-slurm-resume etc. are installed (default: %(default)s)",
    )
    slurm_conf.add_argument(
        "--partition", default="shoal", help="the partition's name (default: %(default)s)"
    )
    slurm_conf.set_defaults(func=_cmd_slurm_conf)

    for command, kind in SLURM_HOOKS.items():  # listed for --help; main() runs them
        sub.add_parser(
            command,
            help=f"Slurm's {kind} program: hand HOSTLIST to the running daemon, return at once",
        )

    cluster = sub.add_parser(
        "cluster",
        help="launch or destroy the config's AWS cluster (as Toil's launch-cluster)",
        description=(
            "launch: the cluster's security group (its members reach one another) and the "
            "leader instance in it, tagged with the cluster name, in the first of "
            "provider.zones; refused when the cluster has a leader already. destroy: every "
            "instance tagged with the cluster (leader and workers), its Auto Scaling groups "
            "and launch templates, then the security group, waiting until the instances "
            "are gone; refused when nothing of the cluster exists. Both are safe to run "
            "again after a failure."
        ),
    )
    cluster_sub = cluster.add_subparsers(dest="action", required=True, metavar="ACTION")
    launch = cluster_sub.add_parser("launch", help="create the security group and the leader")
    launch.add_argument("-c", "--config", required=True, help="YAML config file")
    launch.add_argument("--leader-node-type", required=True, help="the leader's instance type")
    launch.add_argument(
        "--leader-storage", type=int, default=50, help="root volume GiB (default: %(default)s)"
    )
    launch.add_argument("--owner", default=None, help="value of the Owner tag")
    launch.add_argument(
        "-t", "--tag", action="append", metavar="KEY=VALUE", help="another tag (repeatable)"
    )
    destroy = cluster_sub.add_parser("destroy", help="terminate and delete everything of it")
    destroy.add_argument("-c", "--config", required=True, help="YAML config file")
    cluster.set_defaults(func=_cmd_cluster)

    from shoal.daemon.simulate import args as simulate_args

    simulate = sub.add_parser(
        "simulate", help=simulate_args.HELP, description=simulate_args.DESCRIPTION
    )
    simulate_args.add_arguments(simulate)
    simulate.set_defaults(func=_cmd_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given and given[0] in SLURM_HOOKS:  # the fast path slurmctld takes: no argparse
        from shoal.daemon.slurm.hook import main as hook

        return hook(given[1:], kind=SLURM_HOOKS[given[0]])
    args = build_parser().parse_args(argv)
    if args.func is _cmd_run:  # the daemon: a broken pipe there is a fault, its traceback kept
        return int(args.func(args))
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a short output is still buffered: written here, not at exit
        return code
    except BrokenPipeError:  # `shoal config-schema | head`: the reader left, as it may
        # Python's own advice: stdout to /dev/null, so the flush at exit does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
