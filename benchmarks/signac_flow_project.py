"""The same campaign shape as benchmarks/synthetic.py, as a signac-flow project, for
comparing `status` and planning speed in the same run.

    python signac_flow_project.py DIR --sims 1000 --segments 20 [--done 0.9]   # create
    python DIR/project.py status                                              # time this

Each signac job is one simulation; files seg-XXXX.done mark finished segments, as a
file-based signac-flow campaign would record them. Run in an environment with
signac and signac-flow installed (benchmarks/run makes one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROJECT = """
import os
from flow import FlowProject

SEGMENTS = {segments}


class Campaign(FlowProject):
    pass


def segments_done(job):
    return sum(1 for k in range(SEGMENTS) if job.isfile(f"seg-{{k:04d}}.done"))


@Campaign.post.isfile("setup.done")
@Campaign.operation
def setup(job):
    open(job.fn("setup.done"), "w").close()


@Campaign.pre.after(setup)
@Campaign.post(lambda job: segments_done(job) == SEGMENTS)
@Campaign.operation
def simulate(job):
    open(job.fn(f"seg-{{segments_done(job):04d}}.done"), "w").close()


@Campaign.pre(lambda job: segments_done(job) == SEGMENTS)
@Campaign.post.isfile("analysis.json")
@Campaign.operation
def analyze(job):
    open(job.fn("analysis.json"), "w").close()


if __name__ == "__main__":
    Campaign().main()
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--done", type=float, default=0.0)
    args = parser.parse_args()
    import signac

    args.directory.mkdir(parents=True, exist_ok=True)
    project = signac.init_project(str(args.directory))
    finished = round(args.done * args.sims)
    for index in range(args.sims):
        job = project.open_job({"system": f"s{index // 10:05d}", "replica": index % 10 + 1}).init()
        if index < finished:
            open(job.fn("setup.done"), "w").close()
            for k in range(args.segments):
                open(job.fn(f"seg-{k:04d}.done"), "w").close()
            open(job.fn("analysis.json"), "w").close()
    (args.directory / "project.py").write_text(PROJECT.format(segments=args.segments))


if __name__ == "__main__":
    sys.exit(main())
