"""SUVbw factors (homing.dicom.suv): the calculate-suv reference suite and analytic cases.

The reference cases come from ../shared/data/suv-reference (real Siemens, GE and Philips PET
headers with the factors the calculate-suv project expects); they are skipped only when
that folder is absent. The analytic cases build headers in code and need no data.
"""

import csv
import json
import math
from decimal import Decimal

import pytest

from homing import HomingError
from homing.dicom.suv import dataset_from_json, suv_bw_factor

from ..conftest import SHARED_DATA, require_data

SUV_REFERENCE = SHARED_DATA / "suv-reference"
REL_TOL = 1e-3
F18_HALF_LIFE_S = 6586.2  # 109.77 min


def _reference_rows() -> list:
    table = SUV_REFERENCE / "expected.tsv"
    if not table.is_file():
        return [pytest.param(None, None, id="suv-reference-absent")]  # require_data below
    with table.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [pytest.param(r["case"], r["expected_suv_factor_per_bq_ml"], id=r["case"]) for r in rows]


def _rounding_rtol(text: str) -> float:
    """Relative half-unit of the last digit given in ``text`` (e.g. '0.000551' -> 9.1e-4)."""
    d = Decimal(text.strip())
    half_ulp = Decimal(5) * Decimal(10) ** (d.as_tuple().exponent - 1)
    return float(half_ulp / abs(d))


def test_rounding_rtol():
    assert _rounding_rtol("0.000551") == pytest.approx(0.5e-6 / 0.000551)
    assert _rounding_rtol("0.000550") == pytest.approx(0.5e-6 / 0.00055)
    assert _rounding_rtol("0.00042748316187197236") < 1e-15


@pytest.mark.parametrize(("case", "expected_text"), _reference_rows())
def test_reference_case(case, expected_text):
    require_data(SUV_REFERENCE / "expected.tsv", "calculate-suv reference suite")
    headers = json.loads((SUV_REFERENCE / f"{case}-instances.json").read_text())
    datasets = [dataset_from_json(h) for h in headers]
    factors = suv_bw_factor(datasets)
    expected = float(expected_text)
    tol = max(REL_TOL, _rounding_rtol(expected_text))
    errors = [abs(f - expected) / expected for f in factors]
    assert len(factors) == len(headers)
    assert max(errors) <= tol, f"{case}: factors {factors}, expected {expected_text}"


# --------------------------------------------------------------------------------------
# analytic cases (headers in calculate-suv's keyword layout)
# --------------------------------------------------------------------------------------


def _header(**changes) -> dict:
    """A mouse FDG scan: 25 g, 10 MBq injected at 10:00:00, series at 11:49:46.2 (one T½)."""
    h = {
        "SeriesDate": "20240105",
        "SeriesTime": "114946.200",
        "AcquisitionDate": "20240105",
        "AcquisitionTime": "114946.200",
        "PatientWeight": 0.025,
        "Units": "BQML",
        "DecayCorrection": "START",
        "CorrectedImage": ["ATTN", "DECY"],
        "RadionuclideTotalDose": 10e6,
        "RadionuclideHalfLife": F18_HALF_LIFE_S,
        "RadiopharmaceuticalStartDateTime": "20240105100000",
    }
    h.update(changes)
    return {k: v for k, v in h.items() if v is not None}


def _factors(*headers, **kw) -> list[float]:
    return suv_bw_factor([dataset_from_json(h) for h in headers], **kw)


def test_one_half_life_halves_the_dose():
    # 25 g / (10 MBq / 2) = 5e-6 g/mL per Bq/mL
    assert _factors(_header()) == pytest.approx([5e-6], rel=1e-12)


def test_date_counts_not_only_time_of_day():
    # 89Zr, injected two days and one hour before the scan: 49 h at T½ 78.41 h.
    hl = 78.41 * 3600
    h = _header(
        SeriesTime="110000",
        AcquisitionTime="110000",
        RadionuclideHalfLife=hl,
        RadiopharmaceuticalStartDateTime="20240103100000",
    )
    expected = 25.0 / (10e6 * 2 ** (-49 / 78.41))
    assert _factors(h) == pytest.approx([expected], rel=1e-12)


def test_midnight_crossing_with_start_time_only():
    # Injected 23:30 the evening before a 00:30 series; only the time of day is recorded.
    h = _header(
        SeriesDate="20240106",
        SeriesTime="003000",
        AcquisitionDate="20240106",
        AcquisitionTime="003000",
        RadionuclideHalfLife=3600.0,
        RadiopharmaceuticalStartDateTime=None,
        RadiopharmaceuticalStartTime="233000",
    )
    warn: list[str] = []
    assert _factors(h, warn=warn) == pytest.approx([25.0 / 5e6], rel=1e-12)
    assert any("midnight" in w for w in warn)


def test_qiba_rule_takes_earliest_acquisition_when_series_time_is_later():
    # Series 12:00 is later than the acquisitions (11:10, 11:00): reference 11:00, 1 h after
    # the 10:00 injection at T½ 1 h.
    common = {"SeriesTime": "120000", "RadionuclideHalfLife": 3600.0}
    a = _header(AcquisitionTime="111000", **common)
    b = _header(AcquisitionTime="110000", **common)
    warn: list[str] = []
    assert _factors(a, b, warn=warn) == pytest.approx([5e-6, 5e-6], rel=1e-12)
    assert any("QIBA" in w for w in warn)


def test_qiba_rule_keeps_series_time_when_not_later():
    # Siemens: AcquisitionTime moves with each bed; series 11:00 comes first and is used.
    common = {"SeriesTime": "110000", "RadionuclideHalfLife": 3600.0}
    beds = [_header(AcquisitionTime=t, **common) for t in ("110001", "110500", "111000")]
    assert _factors(*beds) == pytest.approx([5e-6] * 3, rel=1e-12)


def test_qiba_rule_uses_ge_private_scan_time():
    h = _header(
        SeriesTime="120000",
        AcquisitionTime="113000",
        RadionuclideHalfLife=3600.0,
        GEPrivatePostInjectionDateTime="20240105120000",
    )
    # GE (0009,100D) 12:00 wins over the earliest acquisition 11:30: two half-lives.
    assert _factors(h) == pytest.approx([25.0 / 2.5e6], rel=1e-12)


def test_dicom_json_model_gives_the_same_factor():
    ds = dataset_from_json(_header(GEPrivatePostInjectionDateTime="20240105114946.2"))
    as_json = ds.to_json_dict()
    assert "00540016" in as_json  # RadiopharmaceuticalInformationSequence, nested
    assert suv_bw_factor([dataset_from_json(as_json)]) == suv_bw_factor([ds])


def test_half_life_argument_overrides_header():
    h = _header(RadionuclideHalfLife=1.0)
    assert _factors(h, half_life_s=F18_HALF_LIFE_S) == pytest.approx([5e-6], rel=1e-12)


def test_admin_decay_correction_does_not_decay():
    assert _factors(_header(DecayCorrection="ADMIN")) == pytest.approx([25.0 / 10e6])


def test_gml_is_already_suv():
    assert _factors(_header(Units="GML", PatientWeight=None)) == [1.0]


def test_philips_cnts():
    both = {"SUVScaleFactor": "0.0035", "ActivityConcentrationScaleFactor": "4.0"}
    acsf = {"ActivityConcentrationScaleFactor": "4.0"}
    assert _factors(_header(Units="CNTS", PhilipsPETPrivateGroup=both)) == [0.0035]
    assert _factors(_header(Units="CNTS", PhilipsPETPrivateGroup=acsf)) == pytest.approx(
        [4.0 * 5e-6], rel=1e-12
    )
    # BQML ignores the Philips group
    assert _factors(_header(PhilipsPETPrivateGroup=both)) == pytest.approx([5e-6], rel=1e-12)
    with pytest.raises(HomingError, match=r"7053,1009"):
        _factors(_header(Units="CNTS"))


def test_injection_after_scan_start():
    # Injected 1 h (one T½) after the series start, e.g. during a dynamic scan.
    h = _header(
        SeriesTime="090000",
        AcquisitionTime="090000",
        RadionuclideHalfLife=3600.0,
    )
    with pytest.raises(HomingError, match="after the scan"):
        _factors(h)
    # Dose decayed backwards to 09:00 is 20 MBq.
    assert _factors(h, allow_injection_after_scan_start=True) == pytest.approx([25.0 / 20e6])


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"PatientWeight": None}, r"PatientWeight \(0010,1030\)"),
        ({"PatientWeight": 0}, r"PatientWeight \(0010,1030\)"),
        ({"RadionuclideTotalDose": None}, r"RadionuclideTotalDose \(0018,1074\)"),
        ({"RadionuclideTotalDose": 0}, r"RadionuclideTotalDose \(0018,1074\)"),
        ({"RadionuclideHalfLife": None}, r"RadionuclideHalfLife \(0018,1075\)"),
        ({"RadiopharmaceuticalStartDateTime": None}, r"RadiopharmaceuticalStartTime \(0018,1072\)"),
        ({"Units": None}, r"Units \(0054,1001\)"),
        ({"DecayCorrection": None}, r"DecayCorrection \(0054,1102\)"),
        ({"DecayCorrection": "NONE"}, r"DecayCorrection \(0054,1102\)"),
        ({"CorrectedImage": ["DECY"]}, r"CorrectedImage \(0028,0051\)"),
        ({"SeriesTime": None, "AcquisitionTime": None}, r"SeriesTime \(0008,0031\)"),
    ],
)
def test_missing_field_is_named(changes, field):
    with pytest.raises(HomingError, match=field):
        _factors(_header(**changes))


def test_instances_must_agree_on_weight():
    with pytest.raises(HomingError, match="PatientWeight"):
        _factors(_header(), _header(PatientWeight=0.03))


def test_keyword_layout_keeps_values():
    # The keyword layout of calculate-suv round-trips numbers as DICOM DS strings.
    ds = dataset_from_json(_header(PatientWeight=69, RadionuclideTotalDose=388000000))
    assert math.isclose(float(ds.PatientWeight), 69.0)
    assert float(ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose) == 388e6
