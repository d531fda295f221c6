"""The `mdcampaign` command: look at a campaign without running Snakemake."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from . import layout
from .campaign import load_campaign
from .configuration import read_config_file
from .errors import CampaignError, TransferError
from .guards import check_started
from .records import Manifest, read_manifests
from .sites import ASSIGNMENT_FILE, assign, planning_work, projected_days, write_assignment


def _load(args, check: bool = True):
    directory = Path(args.directory)
    config = read_config_file(directory / args.config)
    if getattr(args, "site", None):
        config["site"] = args.site
    elif config.get("sites") and not config.get("site"):
        config["site"] = next(iter(config["sites"]))  # any: plans cover every site
    campaign = load_campaign(config, args.config, base_dir=directory)
    if check:
        check_started(campaign, directory)
    return campaign, config


def _store(campaign, config):
    from .store import TransferSettings, open_store

    return open_store(campaign.store, TransferSettings.of(**config.get("transfer", {})))


def cmd_validate(args) -> int:
    campaign, _ = _load(args)
    segments = sum(s.n_segments for s in campaign.simulations)
    total_ns = sum(s.n_segments * s.protocol.segment_ns for s in campaign.simulations)
    goals = sum(1 for system in campaign.systems.values() if system.protocol.until_observable)
    bound = f" at most ({goals} systems stop when converged)" if goals else ""
    print(
        f"{args.config}: campaign '{campaign.name}' is valid: {len(campaign.systems)} systems, "
        f"{len(campaign.simulations)} simulations, {segments} segments, {total_ns:g} ns in total{bound}"
    )
    # what the campaign needs that this machine lacks: named here, before anything runs
    # (a warning: the simulations may be meant for another machine; doctor checks a site)
    from .doctor import FAIL, check_engines, check_ligand_tools

    mine = campaign.share if args.site else campaign.simulations
    for check in check_engines(campaign, mine) + check_ligand_tools(campaign, mine):
        if check.status == FAIL:
            print(f"warning: this machine cannot run them all: {check.what}; fix: {check.fix}", file=sys.stderr)
    return 0


def stopped_systems(campaign, directory) -> dict[str, int]:
    """The systems that stopped when converged, as this site knows: system -> segments."""
    from .convergence import goals_of, stop_after

    found = {}
    for system, goal in goals_of(campaign.systems).items():
        stop = stop_after(system, goal, directory)
        if stop is not None:
            found[system] = stop
    return found


def segment_manifests(root: Path) -> list[Manifest]:
    """Every readable segment record below ``root`` (a store's or the local results' sims/)."""
    return read_manifests(sorted(Path(root).glob(f"*/r*/segments/*/{layout.MANIFEST}")))


def progress(manifests: list[Manifest]) -> tuple[dict[str, str], dict[str, float], dict[tuple[str, str], float]]:
    """From segment manifests: where each started simulation runs, how many ns each
    has done, and the median speed measured per (site, system)."""
    started, done, samples = {}, {}, {}
    for manifest in manifests:
        name = manifest.simulation
        system = layout.SimulationId.parse(name).system
        done[name] = done.get(name, 0.0) + manifest.info.simulated_ns
        site = manifest.site
        if manifest.segment == 0 and site:
            started[name] = site
        if site and manifest.info.ns_per_day:
            samples.setdefault((site, system), []).append(manifest.info.ns_per_day)
    return started, done, {key: statistics.median(values) for key, values in samples.items()}


def cmd_plan(args) -> int:
    campaign, config = _load(args, check=False)
    if not campaign.sites:
        print("This campaign defines no sites: every simulation runs wherever you run it.")
        return 0
    if campaign.pulls and args.write:
        raise CampaignError(
            f"sites pull work from the store: a written plan ({ASSIGNMENT_FILE}) would pin every "
            "simulation to one site; to pin some, use the systems table's site column, or set "
            "`pulling: {enabled: false}` to assign all of them in advance"
        )
    with tempfile.TemporaryDirectory(prefix="mdcampaign-plan-") as cache:
        manifests = segment_manifests(Path(args.directory) / layout.SIMS_RECORDS)
        try:
            manifests += segment_manifests(
                _store(campaign, config).collect(layout.STORE_SIMS, layout.MANIFEST, Path(cache))
            )
        except TransferError as error:
            print(f"note: could not read the store ({error}); using this site's records only", file=sys.stderr)
    started, done, speeds = progress(manifests)
    works = planning_work(campaign.simulations, campaign.systems, done, stopped_systems(campaign, args.directory))
    sites = list(campaign.sites.values())
    if campaign.pulls and not args.write:
        return _pulling_plan(campaign, config, manifests, works, args.verbose)
    assignment = {s.name: s.site for s in campaign.simulations}
    if args.write:
        fixed = dict(started)
        for simulation in campaign.simulations:
            if campaign.systems[simulation.system].site and simulation.name not in fixed:
                fixed[simulation.name] = campaign.systems[simulation.system].site
        assignment = assign(works, sites, fixed, speeds, largest_first=True)
        write_assignment(Path(args.directory) / ASSIGNMENT_FILE, assignment)
    finish = projected_days(assignment, works, sites, speeds)
    print(
        f"Plan of campaign '{campaign.name}' ({len(works)} simulations; measured speeds for "
        f"{len(speeds)} site/system pairs):"
    )
    for site in sites:
        mine = [w for w in works if assignment[w.name] == site.name]
        print(
            f"\n  {site.name}: {len(mine)} simulations, {sum(w.ns for w in mine):g} ns left, "
            f"capacity {site.capacity}, projected finish in {finish[site.name]:.1f} days"
            + (f" (profile {site.profile})" if site.profile else "")
        )
        if args.verbose:
            for work in mine:
                flag = " (started)" if work.name in started else ""
                print(f"    {work.name}: {work.ns:g} ns{flag}")
    if args.write:
        print(f"\nWrote {ASSIGNMENT_FILE}: copy it to every site (it is part of the campaign's config).")
    return 0


def _pulling_plan(campaign, config, manifests: list[Manifest], works: list, verbose: bool) -> int:
    """What each pulling site has done and holds, and when the campaign should end if
    every site keeps its slots busy (the work left spread over all their throughput)."""
    from .claims import ClaimBoard

    try:
        listing = ClaimBoard(_store(campaign, config), campaign.pulling.lease_seconds).listing()
    except TransferError as error:
        print(f"note: could not read the claims ({error})", file=sys.stderr)
        listing = None
    done_ns: dict[str, float] = {}
    for manifest in manifests:
        site = manifest.site or "?"
        done_ns[site] = done_ns.get(site, 0.0) + manifest.info.simulated_ns
    holds: dict[str, list[str]] = {}
    if listing is not None:
        for name, claims in listing.simulations.items():
            if claims.held(campaign.pulling.lease_seconds):
                holds.setdefault(claims.holder_site, []).append(f"{name} ({claims.holder_job})")
    left = [w for w in works if w.ns > 0]
    # the work left (ns of a typical system) over what all sites do per day together
    throughput = sum(site.capacity * site.ns_per_day for site in campaign.sites.values())
    finish = sum(w.ns * w.size for w in left) / throughput
    print(
        f"Campaign '{campaign.name}': {len(works)} simulations, {sum(w.ns for w in left):g} ns left in "
        f"{len(left)}; sites pull work from the store (lease {campaign.pulling.lease_minutes:g} min)"
    )
    for name, site in campaign.sites.items():
        held = holds.get(name, [])
        print(
            f"\n  {name}: {done_ns.get(name, 0.0):g} ns done, holds {len(held)} of capacity {site.capacity}"
            + (f" (profile {site.profile})" if site.profile else "")
        )
        if verbose:
            for entry in sorted(held):
                print(f"    {entry}")
    print(f"\nProjected finish, if every site keeps all its slots busy (configured speeds): {finish:.1f} days")
    return 0


def cmd_summary(args) -> int:
    """The campaign-wide table: every site's analyses, as found in the store."""
    from .summary import simulation_identity, summary_row, write_summary

    campaign, config = _load(args, check=False)
    store = _store(campaign, config)
    rows, replicas = [], {}
    with tempfile.TemporaryDirectory(prefix="mdcampaign-summary-") as cache:
        # the store's analyses: the store itself, or a copy mirroring it
        base = store.collect(layout.STORE_SIMS, "analysis.json", Path(cache) / layout.STORE_SIMS).parent
        for simulation in campaign.simulations:
            current = base / layout.store_analysis(simulation.name, simulation.n_segments)
            earlier = sorted(current.parent.parent.glob(f"[0-9]*/{current.name}"))
            path = current if current.exists() else (earlier[-1] if earlier else None)
            analysis = json.loads(path.read_text()) if path else {}
            replicas.setdefault(simulation.system, []).append(analysis)
            row = summary_row(simulation_identity(simulation), analysis)
            row["status"] = "analyzed" if path == current else ("partly analyzed" if path else "pending")
            row["site"] = simulation.site or ""
            rows.append(row)
    out = Path(args.directory) / layout.RESULTS
    out.mkdir(parents=True, exist_ok=True)
    table, figure = out / "campaign_summary.tsv", out / "campaign_summary.png"
    systems, compared = out / "campaign_systems.tsv", out / "campaign_comparisons.tsv"
    groups = {s.id: (s.group, s.reference) for s in campaign.systems.values() if s.group}
    figures = out / "campaign_comparisons.png"
    write_summary(rows, table, figure, campaign.name, (systems, replicas), None, (compared, figures, groups))
    written = (table, figure, systems, compared, figures)
    store.put_directory({path.name: path for path in written}, "summary")
    pending = sum(1 for row in rows if row["status"] == "pending")
    print(
        f"{table}: {len(rows)} simulations, {len(rows) - pending} analyzed, {pending} pending; "
        f"also in {store.describe('summary')}"
    )
    return 0


def cmd_status(args) -> int:
    from .status import collect, render

    campaign, config = _load(args, check=False)
    listing = None
    if campaign.pulls:  # what every site holds and has done: one listing of the store
        from .claims import ClaimBoard

        try:
            listing = ClaimBoard(_store(campaign, config), campaign.pulling.lease_seconds).listing()
        except TransferError as error:
            print(
                f"note: could not read the claims in the store ({error}); showing this site's records only",
                file=sys.stderr,
            )
    status = collect(campaign, Path(args.directory), use_slurm=not args.no_slurm, listing=listing)
    if campaign.sites:  # each site's driver, by its heartbeat: one more call to the store
        from .heartbeat import read_beats, site_states

        try:
            status.sites = site_states(campaign, read_beats(_store(campaign, config)))
        except TransferError as error:
            print(f"note: could not read the sites' heartbeats in the store ({error})", file=sys.stderr)
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
    else:
        colour = sys.stdout.isatty() and not args.no_colour and "NO_COLOR" not in __import__("os").environ
        print(render(status, colour))
    return 0


def cmd_doctor(args) -> int:
    from .doctor import FAIL, run_checks

    checks = run_checks(Path(args.directory), args.config, args.profile, args.site)
    colour = sys.stdout.isatty() and "NO_COLOR" not in __import__("os").environ
    for check in checks:
        print(check.line(colour))
    failed = sum(1 for check in checks if check.status == FAIL)
    print(f"\n{len(checks)} checks, {failed} failed" + ("" if failed else ": this machine is ready"))
    return 1 if failed else 0


def cmd_tune(args) -> int:
    import os

    from .tune import best, tune

    available = len(os.sched_getaffinity(0))
    cores = available if args.cores is None else args.cores
    if not 1 <= cores <= available:
        raise CampaignError(
            f"tune --cores: must be between 1 and the {available} cores this process may use (got {cores})"
        )
    if not 0 <= args.gpus <= 64:
        raise CampaignError(f"tune --gpus: must be between 0 and 64 (got {args.gpus})")
    if args.gpus > cores:
        raise CampaignError(f"tune --gpus: each GPU's slots need a core of their own ({args.gpus} GPUs, {cores} cores)")
    if not 1 <= args.seconds <= 3600:
        raise CampaignError(
            f"tune --seconds: each trial must last between 1 and 3600 s to measure anything (got {args.seconds:g})"
        )
    campaign, _ = _load(args, check=False)
    directory = Path(args.directory)
    wanted = args.systems or list(campaign.systems)
    unknown = [name for name in wanted if name not in campaign.systems]
    if unknown:
        raise CampaignError(
            f"no system '{unknown[0]}' in {campaign.systems_file} (systems: {', '.join(campaign.systems)})"
        )
    systems = {name: directory / layout.fill(layout.SETUP_DIR, system=name) for name in wanted}
    missing = [name for name, folder in systems.items() if not Path(args.directory, layout.setup_info(name)).exists()]
    if missing:
        raise CampaignError(
            f"system(s) {', '.join(missing)} not set up yet: run snakemake --profile <machine> "
            f"{' '.join(layout.fill(layout.SETUP_DIR, system=m) + '/setup.json' for m in missing)}"
        )
    print(
        f"tuning on {cores} cores" + (f" and {args.gpus} GPUs" if args.gpus else "") + f", {args.seconds:g} s per trial"
    )
    trials = tune(systems, cores, args.gpus, args.seconds, campaign.platform if not args.gpus else "auto")
    if not trials:
        raise CampaignError("nothing was measured (tune measures OpenMM systems; see the lines above)")
    print()
    for name, trial in best(trials).items():
        fewest = next(t for t in trials if t.system == name)  # the first candidate: fewest slots
        gain = trial.total / fewest.total if fewest.total else 1.0
        p = trial.packing
        print(
            f"{name}: best {p.slots} slots x {p.threads} threads: {trial.total:.1f} ns/day in total "
            f"({gain:.2f}x {fewest.packing.slots} slot(s)); packing: {{slots: {p.slots}, threads: {p.threads}"
            + (f", gpus: {p.gpus}" if p.gpus else "")
            + "}"
        )
    return 0


def cmd_init(args) -> int:
    from .folders import init_campaign

    folder = Path(args.folder)
    written = init_campaign(folder)
    print(
        f"Wrote a new campaign in {folder} ({len(written)} files): config/ (the example campaign: edit "
        "config/config.yaml and config/systems.tsv), profiles/ (one per machine) and workflow/Snakefile (it "
        "runs the installed mdcampaign workflow). Then, in that folder:\n"
        "  mdcampaign validate\n  snakemake --profile profiles/local"
    )
    return 0


def cmd_profile(args) -> int:
    from .folders import install_profiles, profile_names, user_profile_dir

    # a campaign's own profiles (perhaps edited) if run in one, else the shipped ones
    campaign_profiles = Path(args.directory) / "profiles"
    source = campaign_profiles if campaign_profiles.is_dir() else None
    if args.action == "list" or not args.names:
        print(f"profiles: {', '.join(profile_names(source))}")
        if args.action == "install":
            print(f"name the ones to install in {user_profile_dir()}, e.g. mdcampaign profile install stampede")
            return 2
        return 0
    for line in install_profiles(args.names, source):
        print(line)
    return 0


def cmd_sites(args) -> int:
    """`mdcampaign sites deploy | start | stop | logs`: every site from this machine."""
    from . import driver

    if args.action == "here":  # on the site's own machine, called over SSH by the others
        print(driver.here(Path(args.directory), args.what, args.site, args.profile, ["--now"] if args.now else []))
        return 0
    here = read_config_file(Path(args.directory) / args.config).get("site")  # this folder's own site, if any
    campaign, config = _load(args, check=False)
    from .deploy import chosen_sites, deploy
    from .store import TransferSettings

    settings = TransferSettings.of(**config.get("transfer", {}))
    if args.action == "deploy":
        wheels = Path(args.wheels) if args.wheels else None
        failed = deploy(campaign, args.names, Path(args.directory), settings, wheels=wheels)
        return 1 if failed else 0
    if args.action == "logs":
        site = chosen_sites(campaign, [args.name], here=here)[0]
        print(driver.on_site(site, settings, Path(args.directory), "logs"))
        return 0
    sites = chosen_sites(campaign, args.names, here=here)
    if args.action == "start" and args.all:
        if args.names:
            raise CampaignError("sites start --all: name no sites (it starts every site whose driver is silent)")
        sites = _silent_sites(campaign, config, sites)
        if not sites:
            print("every site's driver is alive or finished: nothing to start")
            return 0
    failed = 0
    for site in sites:
        try:
            options = ["--now"] if args.action == "stop" and args.now else []
            print(driver.on_site(site, settings, Path(args.directory), args.action, *options))
        except (CampaignError, TransferError) as error:
            print(f"FAILED: {error}")
            failed += 1
    return 1 if failed else 0


def _silent_sites(campaign, config, sites):
    """The sites whose driver is not running and has not finished, by the store's heartbeats."""
    from .heartbeat import read_beats, site_states

    states = {state.site: state for state in site_states(campaign, read_beats(_store(campaign, config)))}
    return [site for site in sites if states[site.name].needs_start]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mdcampaign", description="Inspect an mdcampaign campaign.")
    parser.add_argument("--directory", "-d", default=".", help="campaign directory (default: .)")
    parser.add_argument(
        "--config", "-c", default="config/config.yaml", help="config file, relative to the campaign directory"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser(
        "validate", help="check config/ and the systems table; print what the campaign contains"
    )
    validate.add_argument("--site", help="check this machine's software for this site's share only")
    plan = commands.add_parser("plan", help="which site runs which simulation, and when each site will finish")
    plan.add_argument(
        "--write", action="store_true", help=f"re-balance simulations that have not started and write {ASSIGNMENT_FILE}"
    )
    plan.add_argument("--verbose", "-v", action="store_true", help="list every simulation")
    commands.add_parser("summary", help="campaign-wide table of every site's analyses, read from the store")
    status = commands.add_parser("status", help="one row per simulation: state, progress, speed, ETA, failures")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--no-slurm", action="store_true", help="do not ask squeue about running jobs")
    status.add_argument("--no-colour", "--no-color", action="store_true", help="plain text even on a terminal")
    status.add_argument("--site", help="show the campaign as this site sees it (default: the config's)")
    doctor = commands.add_parser("doctor", help="check this machine against a profile and the campaign")
    doctor.add_argument("--profile", help="profile name (in profiles/) or path, e.g. profiles/stampede")
    doctor.add_argument("--site", help="check the campaign as this site runs it")
    tune = commands.add_parser("tune", help="measure which packing (slots x threads) gives the most ns/day here")
    tune.add_argument("--cores", type=int, help="cores a job has (default: all this process may use)")
    tune.add_argument("--gpus", type=int, default=0, help="GPUs a job has (default: 0, CPU only)")
    tune.add_argument("--seconds", type=float, default=20.0, help="length of each trial (default: 20)")
    tune.add_argument("systems", nargs="*", help="system ids (default: every system; each must be set up)")
    init = commands.add_parser("init", help="write a new campaign folder that runs the installed workflow")
    init.add_argument("folder", help="the new campaign's folder (created if missing)")
    profile = commands.add_parser("profile", help="machine profiles")
    profile.add_argument("action", choices=["install", "list"])
    profile.add_argument("names", nargs="*", help="profiles to install, e.g. stampede")
    sites = commands.add_parser("sites", help="deploy, start, stop and watch the campaign's sites (other machines)")
    actions = sites.add_subparsers(dest="action", required=True)
    deploy = actions.add_parser(
        "deploy", help="make or update the campaign folder and exactly this mdcampaign build on each site, over SSH"
    )
    deploy.add_argument("names", nargs="*", help="sites (default: every site with a host)")
    deploy.add_argument(
        "--wheels", help="a folder of wheels for the dependencies (for machines without a package index)"
    )
    start = actions.add_parser("start", help="start each site's Snakemake (its driver), detached on its login node")
    start.add_argument("names", nargs="*", help="sites (default: every site)")
    start.add_argument("--all", action="store_true", help="start every site whose driver is silent, and nothing else")
    stop = actions.add_parser("stop", help="stop each site's driver; running jobs finish their segments")
    stop.add_argument("names", nargs="*", help="sites (default: every site)")
    stop.add_argument("--now", action="store_true", help="also cancel the running jobs (they checkpoint first)")
    logs = actions.add_parser("logs", help="the end of a site's driver log")
    logs.add_argument("name", help="the site")
    here = actions.add_parser("here")  # what the commands above run on the site's machine
    here.add_argument("what", choices=["start", "stop", "logs"])
    here.add_argument("--site", required=True)
    here.add_argument("--profile")
    here.add_argument("--now", action="store_true")
    args = parser.parse_args(argv)
    commands_by_name = {
        "init": cmd_init,
        "profile": cmd_profile,
        "validate": cmd_validate,
        "plan": cmd_plan,
        "summary": cmd_summary,
        "status": cmd_status,
        "doctor": cmd_doctor,
        "tune": cmd_tune,
        "sites": cmd_sites,
    }
    try:
        return commands_by_name[args.command](args)
    except (CampaignError, TransferError) as error:
        print(f"mdcampaign: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
