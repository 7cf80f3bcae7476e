"""Registration and organs: the atlas (``atlas``), ANTs registrations PET → CT and
CT → atlas or reference session, labels and fractional masks on the scan (``register``),
body and bone masks from the CT (``masks``), and registration QC (``qc``)."""
