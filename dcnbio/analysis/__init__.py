"""The analysis layer: xarray in, xarray out (no disk I/O here; see :mod:`dcnbio.io`)."""
