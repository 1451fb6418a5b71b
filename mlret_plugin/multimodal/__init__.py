"""Image-text (CLIP-style) hybrid batch training and zero-shot cross-lingual image retrieval."""
from mlret_plugin.multimodal.data import image_parallel_dataset, is_image_dataset
from mlret_plugin.multimodal.encoder import (TinyImageEncoder, build_dual_encoder, is_dual_encoder_dir,
                                             load_dual_encoder)

__all__ = ["TinyImageEncoder", "build_dual_encoder", "image_parallel_dataset", "is_dual_encoder_dir",
           "is_image_dataset", "load_dual_encoder"]
