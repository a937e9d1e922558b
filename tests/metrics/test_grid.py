"""Grid inference from query points, as the released scripts do it."""

from __future__ import annotations

import numpy as np
import pytest

from trajloom.metrics import factor_grid, infer_grid


@pytest.mark.parametrize(("n", "hw"), [(390, (15, 26)), (400, (20, 20)), (7, (1, 7)), (12, (3, 4))])
def test_factor_grid(n, hw):
    assert factor_grid(n) == hw


def test_infer_grid_restores_row_major_order(rng, grid_points):
    q = grid_points(15, 26).astype(np.int64)
    perm = rng.permutation(390)
    hw, order = infer_grid(q[perm], 390)
    assert hw == (15, 26)
    np.testing.assert_array_equal(q[perm][order], q)


def test_infer_grid_without_a_full_grid_factors_n(grid_points):
    q = grid_points(15, 26)
    q[0] = [1.0, 1.0]  # an extra distinct x and y: not a full grid
    assert infer_grid(q, 390) == ((15, 26), None)
    assert infer_grid(None, 400) == ((20, 20), None)


def test_infer_grid_bad_input():
    with pytest.raises(ValueError, match="query_xy"):
        infer_grid(np.zeros((10, 3)), 10)
    with pytest.raises(ValueError, match="N = 12"):
        infer_grid(np.zeros((10, 2)), 12)
