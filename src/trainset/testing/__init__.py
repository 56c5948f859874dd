"""Small seeded data for tests and benchmarks, made on the spot (nothing is downloaded).

- :mod:`~trainset.testing.sar_rasters`: GeoTIFFs with CRS, transform and nodata (rasterio).
- :mod:`~trainset.testing.sar_sets`: SAR patch sets compared file by file (without provenance).
- :mod:`~trainset.testing.shard_files`, :mod:`~trainset.testing.patch_sets`: SAR shards and
  patch sets whose every value says where it came from.
- :mod:`~trainset.testing.clip_scenes`: per-scene focus outputs in the plan's layout.
- :mod:`~trainset.testing.genfocus_models`: tiny random FLUX transformer, VAE, LoRA and prompt
  cache in diffusers' layout (needs the ``genfocus`` extra).
- :mod:`~trainset.testing.defocus_truth`: scenes whose whole content is known and their exact
  thin-lens defocus (aperture integration): the renderers' ground truth.
- :mod:`~trainset.testing.image_metrics`: PSNR, SSIM and the depth-edge band to score renders.

Synthetic focus scenes with known depth for the pipeline itself are
:mod:`trainset.focus.synthetic` (the demo uses them).
"""
