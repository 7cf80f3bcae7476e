"""The bridge to Snakemake: the study's config and sheets validated (``study``), and one
function per rule that reads its inputs, calls the science and writes its outputs
(``stages``)."""
