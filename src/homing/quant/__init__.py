"""Quantification: organ tables (activity, %ID/g, SUV, cells; ``quantify``), the sheets
checked against the DICOM header (``crosscheck``), user ROIs (``roi``), and the regional
partial-volume correction by the geometric transfer matrix (``pvc``). New quantities (cells
by each method, detection limits) get modules here."""
