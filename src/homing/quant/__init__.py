"""Quantification: organ tables (activity, %ID/g, SUV, cells; ``quantify``), the sheets
checked against the DICOM header (``crosscheck``), and user ROIs (``roi``). New quantities
(cells by each method, detection limits, partial-volume correction) get modules here."""
