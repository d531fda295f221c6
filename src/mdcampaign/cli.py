"""The `mdcampaign` command: look at a campaign without running Snakemake."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .campaign import check_started, load_campaign, read_config_file
from .errors import CampaignError


def _load(args):
    config_path = Path(args.config)
    campaign = load_campaign(read_config_file(config_path), str(config_path), base_dir=Path(args.directory))
    check_started(campaign, Path(args.directory))
    return campaign


def cmd_validate(args) -> int:
    campaign = _load(args)
    segments = sum(s.n_segments for s in campaign.simulations)
    total_ns = sum(s.n_segments * s.protocol.segment_ns for s in campaign.simulations)
    print(f"{args.config}: campaign '{campaign.name}' is valid: {len(campaign.systems)} systems, "
          f"{len(campaign.simulations)} simulations, {segments} segments, {total_ns:g} ns in total")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mdcampaign", description="Inspect an mdcampaign campaign.")
    parser.add_argument("--directory", "-d", default=".", help="campaign directory (default: .)")
    parser.add_argument("--config", "-c", default="config/config.yaml", help="config file, relative to the campaign directory")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("validate", help="check config/ and the systems table; print what the campaign contains")
    args = parser.parse_args(argv)
    if not Path(args.config).is_absolute():
        args.config = str(Path(args.directory) / args.config) if args.directory != "." else args.config
    try:
        return {"validate": cmd_validate}[args.command](args)
    except CampaignError as error:
        print(f"mdcampaign: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
