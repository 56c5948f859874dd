"""Video-Depth-Anything (metric): our implementation, loading the official checkpoints.

Importing this package registers the depth backend ``vda`` (it imports torch; the registry
imports it only when ``vda`` is asked for).
"""

from trainset.focus.depth_backends import register_depth_backend
from trainset.focus.vda.backend import VDADepthBackend, make_vda_backend

register_depth_backend("vda", make_vda_backend)

__all__ = ["VDADepthBackend", "make_vda_backend"]
