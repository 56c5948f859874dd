"""Video-Depth-Anything (metric): our implementation, loading the official checkpoints.

Torch is imported by the submodules; import them only when the ``vda`` backend is asked for.
"""
