"""The simulator: mouse studies with known truth (organ activities, cell numbers), written as
scanner-like DICOM. The workflow never imports this package; the tests, the benchmarks and
``homing simulate`` do.

* ``simulate``: designs (resources/designs/*.yaml) → a study folder (DICOM, sheets, truth);
* ``phantom``: each animal's anatomy, CT and PET images from the atlas;
* ``kinetics``: cells and label per organ over time;
* ``dicomwrite``: PET, SPECT and CT series as scanners export them, quirks included.
"""
