"""Registration and organs: the atlas (``atlas``); ANTsPy's lazy import, thread pin and
images on NIfTI grids (``ants``); the body-cropped working images (``images``); transform
files (``transforms``); CT → atlas or reference session (``ct_to_atlas``); PET → CT
(``pet_to_ct``, with the PET outline and its fit in ``pet_outline``); labels and images
carried through transform chains (``warp``); fractional masks on the PET grid
(``fractional``); body and bone masks from the CT (``masks``); and registration QC (``qc``)."""
