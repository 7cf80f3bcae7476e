"""The simulator: mouse studies with known truth (organ activities, cell numbers), written as
scanner-like DICOM. The workflow never imports this package; the tests, the benchmarks and
``homing simulate`` do.

* ``simulate``: designs (resources/designs/*.yaml) → a study folder (DICOM, sheets, truth),
  run from ``design`` (load, validate, complete), ``biology`` (random streams, kinetics per
  animal), ``scan`` (one scan's images, DICOM and truth files) and ``tables`` (sheets,
  config overlay, truth tables);
* ``phantom``: each animal's anatomy, CT and PET images from the atlas;
* ``kinetics``: cells and label per organ over time;
* ``dicomwrite``: PET, SPECT and CT series as scanners export them, quirks included; its
  parts are ``dicom_values``, ``dicom_geometry``, ``dicom_common``, ``dicom_ct``,
  ``dicom_pet``, ``dicom_enhanced_pet`` and ``dicom_encode``.
"""
