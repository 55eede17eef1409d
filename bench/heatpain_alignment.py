"""Check the timing of the ``heatpain`` labels: run starts, TR, and event-locked responses.

The connattractor events count onsets on one clock across the scanning visit and the package
states no TR. This script prints the evidence the catalog comment of ``heatpain`` cites:

1. **Run starts.** The first onset of every run file, minus 10.216 s: whole numbers of seconds
   that are whole numbers of 2 s frames (0, 836 = 418 x 2, 2472 = 1236 x 2).
2. **TR bounds.** The last event's end after the derived run start against the run length.
3. **TR from the signal.** Insula responses locked to heat onsets and visual + motor responses
   locked to rating onsets, averaged over the 66 runs separately for events in the first and the
   second half of the runs (onsets before / after 180 s), on a 0.5 s lag grid with frame centres
   at ``(k + 0.5) TR``. A wrong TR stretches the clock: the late events' peak moves against the
   early events' (by ~t x dTR / TR). The shift is printed for candidate TRs.
4. **Event-locked peaks** of region groups (the figure of ``workbench.viz.labels``), per event.

Usage::

    python bench/heatpain_alignment.py              # uses $WORKBENCH_CACHE, fetches when needed
    python bench/heatpain_alignment.py --figure heatpain_alignment.png
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd

from workbench.data.catalog import fetch, load_catalog, load_recordings
from workbench.data.frame_labels import read_events
from workbench.viz.labels import PAIN_REGIONS, event_locked_average, plot_event_locked

FIRST_EVENT_S = 10.216  # the run start lies this long before the first event (see data_catalog.yaml)
INSULA = ("AINS_pd", "AINS_v", "AINS_ad", "PINS_v", "PINS_d")
VISUAL_MOTOR = (
    "PVISnet_l",
    "MDVISnet_p",
    "MDVISnet_a",
    "LVISnet_vp",
    "MVISnet_p",
    "MVISnet_av",
    "LVISnet_p",
    "PVISnet_dm",
    "PVISnet_vm",
    "L_MOTnet_dl",
    "MOTnet_am",
    "R_MOTnet_dl",
    "MOTnet_m",
    "MOTnet_ml",
    "MOTnet_vl",
    "MOTnet_l",
)
GROUPS = {**PAIN_REGIONS, "thalamus": ("THAL_d", "THAL_v"), "visual + motor": VISUAL_MOTOR}
LAGS = np.arange(-6.0, 30.01, 0.5)


def events_by_run(recordings) -> dict[tuple[str, str], pd.DataFrame]:
    """The raw events file of every run (onsets on the visit clock), from the cache."""
    catalog = load_catalog()
    paths = {p.name: p for p in fetch("heatpain", catalog, progress=False)}
    name = "sub-{s}_task-heatpainwithregulationandratings_run-{r}_events.tsv"
    return {
        (rec.subject, rec.meta["run"]): read_events(paths[name.format(s=rec.subject, r=rec.meta["run"])])
        for rec in recordings
    }


def region_mean(rec, regions) -> np.ndarray:
    names = rec.meta["roi_names"]
    x = np.asarray(rec.data, dtype=np.float64)[:, [names.index(r) for r in regions]]
    return ((x - x.mean(0)) / x.std(0)).mean(1)


def locked_curve(recordings, events, regions, column: str, tr: float, half: str) -> np.ndarray:
    curves = []
    for rec in recordings:
        table = events[(rec.subject, rec.meta["run"])]
        start = table["onset"].min() - FIRST_EVENT_S
        onsets = (table["onset"][table[column].notna()] - start).to_numpy()
        onsets = onsets[onsets < 180] if half == "early" else onsets[onsets >= 180]
        signal = region_mean(rec, regions)
        centres = (np.arange(len(signal)) + 0.5) * tr
        for onset in onsets:
            times = onset + LAGS
            if times[0] >= centres[0] and times[-1] <= centres[-1]:
                curves.append(np.interp(times, centres, signal))
    return np.mean(curves, axis=0)


def shift_s(early: np.ndarray, late: np.ndarray, max_steps: int = 20) -> float:
    """Delay (s) of ``late`` relative to ``early`` maximising their overlap (0.5 s grid)."""
    inner = slice(max_steps, len(early) - max_steps)
    best = max(range(-max_steps, max_steps + 1), key=lambda k: float(np.dot(early[inner], np.roll(late, -k)[inner])))
    return best * (LAGS[1] - LAGS[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure", help="save the event-locked figure to this PNG")
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dropped cerebellar regions are reported by the loader
        recordings = load_recordings("heatpain", progress=False)
    events = events_by_run(recordings)

    print("1. first onset - 10.216 s per run (s):")
    for run in ("03", "07"):
        starts = [t["onset"].min() - FIRST_EVENT_S for (s, r), t in events.items() if r == run]
        values = sorted({round(float(x), 3) for x in starts})
        print(f"   run {run}: {values} -> in 2 s frames {np.round(np.mean(starts) / 2, 3)}")
    ends = [(t["onset"] + t["duration"]).max() - t["onset"].min() + FIRST_EVENT_S for t in events.values()]
    frames = recordings[0].n_timepoints
    print(
        f"2. last event ends {min(ends):.1f}-{max(ends):.1f} s after the run start; {frames} frames -> TR >= "
        f"{max(ends) / frames:.3f} s"
    )

    print("3. late-minus-early peak shift (s) of event-locked means, by candidate TR:")
    for tr in (1.96, 1.98, 2.00, 2.02, 2.04):
        cells = []
        for label, regions, column in (
            ("insula/heat", INSULA, "temperature"),
            ("visual+motor/rating", VISUAL_MOTOR, "ratings"),
        ):
            early = locked_curve(recordings, events, regions, column, tr, "early")
            late = locked_curve(recordings, events, regions, column, tr, "late")
            cells.append(
                f"{label}: peaks {LAGS[np.argmax(early)]:4.1f} / {LAGS[np.argmax(late)]:4.1f} s, "
                f"shift {shift_s(early, late):+4.1f} s"
            )
        print(f"   TR {tr:.2f}  " + " | ".join(cells))

    print("4. event-locked group means (catalog labels, lags from the event's first frame):")
    for group, regions in GROUPS.items():
        row = []
        for value in ("heat", "rating"):
            average = event_locked_average(recordings, regions, "period", value)
            row.append(f"{value}: peak {average.peak_lag:4.0f} s ({average.mean.max():+.2f})")
        print(f"   {group:15s} " + "  ".join(row))
    if args.figure:
        plot_event_locked(recordings).savefig(args.figure, dpi=110)
        print(f"figure: {args.figure}")


def run(quick: bool = True) -> dict:
    """The evidence as printed (the same in both modes)."""
    from bench.script import script_output

    return script_output(__file__, [])


if __name__ == "__main__":
    main()
