"""Brain-JEPA: the model, its spatiotemporal mask collator, connectivity gradients and fine-tuning.

Dong et al., "Brain-JEPA: Brain Dynamics Foundation Model with Gradient Positioning and
Spatiotemporal Masking", NeurIPS 2024 (arXiv:2409.19407).

==================  ==============================================================
``model``           the family (:class:`BrainJEPA`), its config, encoder and predictor
``masks``           the Cross-ROI / Cross-Time / Double-Cross multi-block collator
``gradients``       group connectivity gradients for the positional embedding
``finetune``        a head on the pre-trained target encoder
==================  ==============================================================
"""

from workbench.models.jepa.model import BrainJEPA, BrainJEPAConfig, time_patches

__all__ = ["BrainJEPA", "BrainJEPAConfig", "time_patches"]
