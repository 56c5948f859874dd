"""Pipeline core: seeds, progress reporting, stages and runners."""
