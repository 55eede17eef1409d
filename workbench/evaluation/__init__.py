"""Evaluation of frozen representations: few-shot identification, baselines and probes.

Task decoding (:mod:`workbench.evaluation.decoding`) reads a frame label from frozen window
features with group-wise cross-validated linear probes (an attentive probe for token grids);
:mod:`workbench.evaluation.finetune` fine-tunes any family's encoder end to end with a head instead
(``from workbench.evaluation.finetune import finetune``: the package exports the submodule under
that name, not the function, so ``import workbench.evaluation.finetune`` keeps meaning the module).

Subject identification follows the protocol of ``docs/evaluation.md``:
support windows from the first part of each run, query windows from the second
(or, ``queries="cross-run"``, from another run of the subject),
nearest prototype over 600 episodes, accuracy / macro-F1 / ROC-AUC / EER with
95 % intervals, FC fingerprinting (Finn et al. 2015), shrinkage LDA on FC and
chance in every table. The collapse check (:mod:`workbench.evaluation.collapse`) gives the
effective rank (RankMe) and spread of any family's embeddings. Encoders enter as factories, so this module knows nothing
about models::

    from workbench.evaluation import closed_set, results_table
    results = closed_set(recordings, window=40, factories={"untrained": factory})
    print(results_table(results))

"""

from workbench.evaluation.attentive import attentive_probe
from workbench.evaluation.baselines import (
    BASELINES,
    chance_summary,
    fc_fingerprint_factory,
    lda_fc_factory,
)
from workbench.evaluation.collapse import collapse_check, collapse_summary, collapse_table, rankme
from workbench.evaluation.decoding import decode, decoding_table
from workbench.evaluation.episodes import METRICS, EpisodeResult, run_episodes
from workbench.evaluation.finetune import (
    FineTuned,
    FinetuneSettings,
    finetune_predictions,
    inner_validation_split,
    layer_depths,
)
from workbench.evaluation.metrics import (
    accuracy,
    equal_error_rate,
    macro_f1,
    ovr_roc_auc,
    summarise,
)
from workbench.evaluation.pools import (
    QUERIES,
    EmbedFn,
    EncoderFactory,
    eligible_recordings,
    embed_windows,
    identification_pools,
    split_runs,
    subjects_of,
    support_stride,
)
from workbench.evaluation.probe import linear_probe
from workbench.evaluation.protocols import closed_set, open_set, results_table, save_metrics

__all__ = [
    "BASELINES",
    "METRICS",
    "QUERIES",
    "EmbedFn",
    "EncoderFactory",
    "EpisodeResult",
    "FineTuned",
    "FinetuneSettings",
    "accuracy",
    "attentive_probe",
    "chance_summary",
    "closed_set",
    "decode",
    "decoding_table",
    "collapse_check",
    "collapse_summary",
    "collapse_table",
    "eligible_recordings",
    "embed_windows",
    "equal_error_rate",
    "fc_fingerprint_factory",
    "finetune_predictions",
    "identification_pools",
    "inner_validation_split",
    "layer_depths",
    "lda_fc_factory",
    "linear_probe",
    "macro_f1",
    "open_set",
    "ovr_roc_auc",
    "rankme",
    "results_table",
    "run_episodes",
    "save_metrics",
    "split_runs",
    "subjects_of",
    "summarise",
    "support_stride",
]
