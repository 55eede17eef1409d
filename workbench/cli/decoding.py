"""``workbench evaluate --task decoding``: a trained run decodes a frame label, beside the baselines.

Rows: the run's encoder, the same encoder untrained (fitted on each training fold), token
families also through the attentive probe (``<family> · attentive``), with ``finetune`` the
encoder fine-tuned end to end (``<family> · finetune``) beside its twin trained from scratch, and
the decoding baselines (:mod:`workbench.evaluation.decoding`). Every subject of the dataset is in
some test fold, so a run that trained on any window of them has seen test data: it is refused,
unless ``refit`` trains the run's family with the run's settings again on each training fold, or
``transductive`` accepts that it saw the test subjects' unlabelled windows (the tables say so).

Example
-------
``workbench evaluate runs/jepa --task decoding --dataset heatpain --label period --window 6 --out results/dec``
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import ConfigError, LeakError

if TYPE_CHECKING:
    from workbench.data.catalog import Catalog


def decode_run(
    run: str | Path,
    dataset: str,
    out: str | Path,
    label: str,
    window: int | None = None,
    grouping: str = "subject",
    folds: int | None = None,
    stride: int | None = None,
    rule: str = "pure",
    exclude: tuple[str, ...] = (),
    normalization: str = "run",
    refit: bool = False,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    label_shift: int = 0,
    sizes: tuple[int, ...] = (),
    n_draws: int = 5,
    finetune: bool = False,
    transductive: bool = False,
    catalog: Catalog | None = None,
) -> tuple[dict[str, Any], Path]:
    """Decode ``label`` of ``dataset`` with a trained run, its untrained twin and the baselines.

    Parameters
    ----------
    run : path
        Run folder or ``checkpoint.pt``.
    dataset, label : str
        Catalog entry and frame-label column.
    out : path
        Folder of ``metrics.json``.
    window : int, optional
        Window length (default: the run's).
    grouping, folds, stride, rule, exclude, normalization, seed
        See :func:`workbench.evaluation.decoding.decode`.
    refit : bool
        Train the run's family with the run's settings on each training fold (cached under
        ``out/runs``) instead of using the run, which is required when the run trained on
        subjects of ``dataset`` (unless ``transductive``).
    label_shift, sizes, n_draws
        See :func:`workbench.evaluation.decoding.decode` (``sizes``: the label-efficiency curves).
    finetune : bool
        Add the run's encoder fine-tuned end to end and its untrained twin trained from scratch.
    transductive : bool
        Accept a run pre-trained on the dataset's subjects, test subjects included (never their
        labels); with ``refit``, pre-train each fold on every subject's unlabelled windows.
    catalog : Catalog, optional
        The catalog holding ``dataset`` (default: ``$WORKBENCH_CATALOG`` or the shipped one).

    Returns
    -------
    results, metrics_path
    """
    from workbench.data.catalog import load_recordings
    from workbench.evaluation import save_metrics
    from workbench.evaluation.decoding import decode
    from workbench.files import check_output_folder
    from workbench.runs import (
        TrainedFactory,
        embed_function,
        fixed_finetuner,
        token_family,
        untrained_factory,
        untrained_finetuner,
    )
    from workbench.train import load_method

    check_output_folder(out, "output folder (--out)")  # a file there fails before the run is read
    run = Path(run)
    run_dir = run if run.is_dir() else run.parent
    model, standardizer, state = load_method(run, device=device)
    recordings = load_recordings(dataset, catalog, progress=progress)
    if any(r.data.ndim != 2 for r in recordings):
        raise ConfigError(f"{dataset!r} holds 4-D volumes; decoding needs ROI series (T, R) or volume frames")
    if recordings[0].n_rois != model.n_features:
        raise ConfigError(
            f"{run_dir} was trained on {model.n_features} ROIs but {dataset!r} has {recordings[0].n_rois}"
        )
    seen = sorted({r.subject for r in recordings} & set(state["subjects"]))
    if seen and not (refit or transductive):
        raise LeakError(
            f"{run_dir} trained on subjects {seen[:5]} of {dataset!r}, which every decoding fold tests in turn; "
            "add --refit to train its family on each training fold, --transductive to accept that it saw their "
            "unlabelled windows, or use a run trained on other data"
        )
    engine = {k: v for k, v in state["train_config"].items() if k != "device"}
    tokens = token_family(model.name)
    readouts = [(model.name, False)] + ([(f"{model.name} · attentive", True)] if tokens else [])
    factories: dict[str, Any] = {}
    for name, use_tokens in readouts:
        if refit:
            factories[name] = TrainedFactory(
                model.name,
                overrides=state["method_config"],
                train_overrides=engine,
                run_root=Path(out) / "runs",
                device=device,
                seed=engine["seed"],
                progress=progress,
                tokens=use_tokens,
            )
        else:
            fixed = embed_function(model, standardizer, tokens=use_tokens)
            factories[name] = lambda train_windows, fixed=fixed: fixed
        factories[name.replace(model.name, f"{model.name}-untrained", 1)] = untrained_factory(
            model.name,
            overrides=state["method_config"],
            seed=engine["seed"],
            device=device,
            normalization=engine["normalization"],
            tokens=use_tokens,
        )
    finetuners: dict[str, Any] = {}
    if finetune:
        trained = factories[model.name]
        finetuners[f"{model.name} · finetune"] = (
            trained.finetuner() if refit else fixed_finetuner(model, standardizer, device=device)
        )
        finetuners[f"{model.name}-untrained · finetune"] = untrained_finetuner(
            model.name,
            overrides=state["method_config"],
            seed=engine["seed"],
            device=device,
            normalization=engine["normalization"],
        )
    results = decode(
        recordings,
        label,
        window or model.n_timepoints,
        factories,
        stride=stride,
        grouping=grouping,
        n_folds=folds,
        rule=rule,
        exclude=exclude,
        normalization=normalization,
        seed=seed,
        label_shift=label_shift,
        sizes=sizes,
        n_draws=n_draws,
        finetuners=finetuners,
        pretraining="transductive" if transductive else "inductive",
        progress=progress,
    )
    results["meta"].update({"run": str(run_dir), "dataset": dataset, "refit": refit})
    return results, save_metrics(results, Path(out) / "metrics.json")
