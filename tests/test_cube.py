"""The .cube reader and writer."""

from __future__ import annotations

import numpy as np
import pytest

from autohdr_cli.cube import CubeError, CubeLUT, identity_table, parse_cube, read_cube, write_cube

from conftest import warm_table


def test_round_trip_keeps_table_title_and_domain(tmp_path):
    lut = CubeLUT(warm_table(5), "My look", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), ["made by a test"])
    path = tmp_path / "look.cube"
    write_cube(path, lut)
    back = read_cube(path)
    assert back.size == 5
    assert back.title == "My look"
    assert back.comments == ["made by a test"]
    np.testing.assert_allclose(back.table, lut.table, atol=1e-6)


def test_red_varies_fastest_in_the_file():
    text = "LUT_3D_SIZE 2\n" + "\n".join(f"{r} {g} {b}" for b in (0, 1) for g in (0, 1) for r in (0, 1))
    lut = parse_cube(text)
    np.testing.assert_array_equal(lut.table, identity_table(2))
    assert lut.table[0, 0, 1].tolist() == [1, 0, 0]  # [b, g, r]


def test_domain_and_comments_are_read():
    rows = "\n".join("0 0 0" for _ in range(8))
    lut = parse_cube(f"# hello\nTITLE \"t\"\nDOMAIN_MIN 0 0 0\nDOMAIN_MAX 2 2 2\nLUT_3D_SIZE 2\n{rows}\n")
    assert lut.domain_max == (2.0, 2.0, 2.0)
    assert lut.comments == ["hello"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("LUT_3D_SIZE 2\n0 0 0\n", "needs 8 table rows, found 1"),
        ("LUT_3D_SIZE 1\n0 0 0\n", "line 1: LUT_3D_SIZE 1 is outside 2..256"),
        ("LUT_3D_SIZE 257\n", "line 1: LUT_3D_SIZE 257 is outside 2..256"),
        ("LUT_3D_SIZE two\n", "line 1: LUT_3D_SIZE needs a whole number"),
        ("TITLE x\nLUT_3D_SIZE 2\n0 0\n", "line 3: expected 3 numbers, got 2"),
        ("LUT_3D_SIZE 2\n0 0 zero\n", "line 2: not a number"),
        ("LUT_1D_SIZE 16\n", "line 1: 1D LUTs are not supported"),
        ("0 0 0\n", "line 1: table data before the LUT_3D_SIZE line"),
        ("LUT_3D_SIZE 2\nFOO 1\n", "line 2: unknown keyword FOO"),
        ("LUT_3D_SIZE 2\nDOMAIN_MIN 0 0\n", "line 2: DOMAIN_MIN needs three finite numbers"),
        ("LUT_3D_SIZE 2\n0 0 0\nTITLE late\n", "line 3: keyword TITLE after the table data began"),
    ],
)
def test_malformed_files_name_the_line_and_reason(text, message):
    with pytest.raises(CubeError) as error:
        parse_cube(text, "bad.cube")
    assert str(error.value).startswith("bad.cube: ")
    assert message in str(error.value)


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "x.cube"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(CubeError, match="not a text file"):
        read_cube(path)
