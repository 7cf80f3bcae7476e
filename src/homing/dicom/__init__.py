"""DICOM in: find the series in a folder, read PET, SPECT and CT (classic and Enhanced
multi-frame), their geometry, times, units and radiopharmaceutical, and write NIfTI with a
PET-BIDS style sidecar (``ingest``); SUV from the header alone, as the QIBA rules compute it
(``suv``)."""
