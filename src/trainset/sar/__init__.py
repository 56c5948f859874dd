"""SAR: GeoTIFF -> normalised patches in sharded .npy -> PyTorch datasets and a datamodule."""
