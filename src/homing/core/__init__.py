"""What every stage shares: radioactive decay and clocks (``decay``), the nuclide table
(``nuclides``), the user-facing error (``errors``) and writes that never leave a
complete-looking partial file (``io``)."""
