"""FocusMamba data: sharp frames, metric depth, CoC calibration, defocus renders, focus maps."""
