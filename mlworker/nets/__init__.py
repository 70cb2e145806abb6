"""Segmentation and classification network builders (Keras 3, backend-agnostic)."""
