"""Figures for `snakemake --report` that Snakemake's own views cannot show: the whole
rule graph (a finished campaign's plan holds only analyze → summary, since finished
segments are not planned, by design), and per-simulation timelines of its segments
(which host, job and platform ran each, and how fast)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

# How a campaign's jobs are organized: rule -> (column, row, what it does); the edges
# between rules. One graph per way of running segments (see slots.py, pulling.py).
GRAPHS = {
    "segments": (
        {
            "setup": (0, 1, "repair, solvate,\nminimize, equilibrate"),
            "stage": (1, 0, "copy segment k-1's\nfinal state from the store"),
            "simulate": (2, 1, "segment k, resumable\nfrom its checkpoints"),
            "fetch": (3, 1, "verified copy to the\nstore; the record"),
            "analyze": (4, 1, "RMSD, Rg, RMSF, DSSP\nover all segments"),
            "summary": (5, 1, "campaign table\nand figures"),
        },
        [
            ("setup", "simulate"),
            ("stage", "simulate"),
            ("simulate", "fetch"),
            ("fetch", "stage"),
            ("fetch", "analyze"),
            ("analyze", "summary"),
        ],
    ),
    "packed": (
        {
            "setup": (0, 1, "repair, solvate,\nminimize, equilibrate"),
            "pack": (2, 1, "one job, several slots:\neach stages, simulates and\nfetches segment after segment"),
            "analyze": (4, 1, "RMSD, Rg, RMSF, DSSP\nover all segments"),
            "summary": (5, 1, "campaign table\nand figures"),
        },
        [("setup", "pack"), ("pack", "pack"), ("pack", "analyze"), ("analyze", "summary")],
    ),
    "pulling": (
        {
            "await_work": (0, 0, "wait until the store\nhas work for this site"),
            "setup": (0, 2, "repair, solvate,\nminimize, equilibrate"),
            "pull": (
                2,
                1,
                "slots claim simulations in the\nstore; stage, simulate, fetch,\nanalyze while renewing the claim",
            ),
            "pulled": (4, 1, "everything this site\nmay run is complete"),
            "summary": (5, 1, "campaign table from\nevery site's analyses"),
        },
        [("await_work", "pull"), ("setup", "pull"), ("pull", "await_work"), ("pull", "pulled"), ("pulled", "summary")],
    ),
}


MODES = {"segments": "one job per segment", "packed": "packed jobs", "pulling": "sites pulling work"}


def plot_rule_graph(path: Path, mode: str, campaign: str) -> None:
    """The rules of this campaign and what each does, with the loop that continues a
    simulation segment after segment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes, edges = GRAPHS[mode]
    fig, axis = plt.subplots(figsize=(13, 4.2), constrained_layout=True)
    for name, (x, y, what) in nodes.items():
        axis.text(
            x,
            y,
            f"{name}\n{what}",
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round,pad=0.5", "facecolor": "#e8f0fe", "edgecolor": "#3c6fd1"},
        )
    for source, target in edges:
        (x0, y0, _), (x1, y1, _) = nodes[source], nodes[target]
        if source == target or (x1 < x0):  # the continue loop: the next segment, or the next round
            axis.annotate(
                "",
                xy=(x1 + 0.1, y1 + 0.32),
                xytext=(x0 - 0.1, y0 + 0.32),
                arrowprops={"arrowstyle": "->", "connectionstyle": "arc3,rad=0.5", "color": "#b3261e"},
            )
            axis.text(
                (x0 + x1) / 2, max(y0, y1) + 0.75, "continue: next segment", ha="center", fontsize=8, color="#b3261e"
            )
            continue
        axis.annotate(
            "", xy=(x1 - 0.45, y1), xytext=(x0 + 0.45, y0), arrowprops={"arrowstyle": "->", "color": "#333333"}
        )
    axis.set_xlim(-0.8, 5.8)
    axis.set_ylim(-0.8, 2.9)
    axis.axis("off")
    axis.set_title(f"Campaign {campaign}: every rule of the workflow ({MODES[mode]}), finished or not")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def segment_runs(manifests: list) -> list[dict]:
    """One row per run that worked on a segment: simulation, segment, host, job, slot,
    platform, start, seconds, ns/day (a segment interrupted and resumed has several)."""
    rows = []
    for manifest in manifests:
        for run in manifest.info.runs:
            try:
                started = datetime.fromisoformat(run["started_at"]).timestamp()
            except (KeyError, TypeError, ValueError):
                continue
            rows.append(
                {
                    "simulation": manifest.simulation,
                    "segment": manifest.segment,
                    "site": manifest.site,
                    "host": run.get("host"),
                    "job": run.get("slurm_job_id"),
                    "slot": (run.get("slot") or {}).get("slot")
                    if isinstance(run.get("slot"), dict)
                    else run.get("slot"),
                    "platform": run.get("platform"),
                    "started": started,
                    "seconds": float(run.get("wall_seconds") or 0.0),
                    "ns_per_day": run.get("ns_per_day"),
                }
            )
    return rows


def plot_timelines(manifests: list[dict], path: Path, campaign: str, shown: int, total: int) -> None:
    """A bar per segment run, one row per simulation, coloured by where it ran (site or
    host, and the Slurm job if any); below, each run's speed over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = segment_runs(manifests)
    fig, (bars, speeds) = plt.subplots(
        2, 1, figsize=(13, 3 + 0.25 * max(1, shown)), constrained_layout=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    if not rows:
        bars.text(0.5, 0.5, "no segment has run yet", ha="center", va="center", transform=bars.transAxes)
    else:
        start = min(row["started"] for row in rows)
        simulations = list(dict.fromkeys(row["simulation"] for row in rows))
        where = {}
        palette = plt.get_cmap("tab10")
        for row in rows:
            label = " ".join(
                str(part)
                for part in (row["site"] or row["host"], row["platform"], f"job {row['job']}" if row["job"] else None)
                if part
            )
            colour = where.setdefault(label, palette(len(where) % 10))
            hours = (row["started"] - start) / 3600.0
            y = simulations.index(row["simulation"])
            bars.barh(y, row["seconds"] / 3600.0, left=hours, color=colour, edgecolor="white", height=0.7)
            if row["ns_per_day"]:
                speeds.scatter(hours, row["ns_per_day"], color=colour, s=12)
        bars.set_yticks(range(len(simulations)))
        bars.set_yticklabels(simulations, fontsize=7)
        bars.invert_yaxis()
        bars.legend(
            handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in where.values()],
            labels=list(where),
            fontsize=7,
            loc="lower right",
        )
        speeds.set_xlabel("hours since the first segment started")
        speeds.set_ylabel("ns/day")
    bars.set_title(f"Campaign {campaign}: segments of {shown} of {total} simulations, by where they ran")
    fig.savefig(path, dpi=100)
    plt.close(fig)
