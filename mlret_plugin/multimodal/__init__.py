"""Image-text (CLIP-style) dual encoders and zero-shot cross-lingual image retrieval.

Image-text training rows are training data: ``mlret_plugin.training.image_data`` (re-exported here).
"""
from mlret_plugin.training.image_data import image_parallel_dataset, is_image_dataset
from mlret_plugin.multimodal.encoder import (TinyImageEncoder, build_dual_encoder, is_dual_encoder_dir,
                                             load_dual_encoder)

__all__ = ["TinyImageEncoder", "build_dual_encoder", "image_parallel_dataset", "is_dual_encoder_dir",
           "is_image_dataset", "load_dual_encoder"]
