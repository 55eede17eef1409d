"""Brain-JEPA: the model, its spatiotemporal mask collator and connectivity gradients.

Dong et al., "Brain-JEPA: Brain Dynamics Foundation Model with Gradient Positioning and
Spatiotemporal Masking", NeurIPS 2024 (arXiv:2409.19407).

==================  ==============================================================
``model``           the family (:class:`BrainJEPA`), its config, encoder and predictor
``masks``           the Cross-ROI / Cross-Time / Double-Cross multi-block collator
``gradients``       group connectivity gradients for the positional embedding
==================  ==============================================================

Fine-tuning with a head (any family, this one included) is
:func:`workbench.evaluation.finetune.finetune`.
"""

from workbench.models.jepa.model import BrainJEPA, BrainJEPAConfig, time_patches

__all__ = ["BrainJEPA", "BrainJEPAConfig", "time_patches"]
