"""strategies.pareto: hand-computed fronts, crowding distances, hypervolumes and knees."""
import math

import numpy as np
import pytest

from strategies.pareto import (Objective, as_objectives, crowding_distance, hypervolume, knee_point,
                               non_dominated_sort, pareto_front, pareto_ranks, rank_and_crowding, to_min_matrix)

# --------------------------------------------------------------------------- objectives


def test_objective_parse_and_directions():
    assert Objective.parse("accuracy:max") == Objective("accuracy", "max")
    assert Objective.parse(" params ") == Objective("params", "min")
    assert Objective("a", "max").sign == -1.0 and Objective("a", "min").sign == 1.0
    assert as_objectives({"acc": "max", "params": "min"}) == [Objective("acc", "max"), Objective("params", "min")]
    assert as_objectives([("acc", "max"), "flops:min"]) == [Objective("acc", "max"), Objective("flops", "min")]


@pytest.mark.parametrize("bad", [
    lambda: Objective("acc", "maximize"),
    lambda: Objective("", "min"),
    lambda: as_objectives([]),
    lambda: as_objectives(["acc:max", "acc:min"]),
    lambda: as_objectives([42]),
])
def test_objective_errors(bad):
    with pytest.raises(ValueError):
        bad()


def test_to_min_matrix_negates_max_columns():
    records = [{"accuracy": 0.91, "params": 12345, "flops": 7},
               {"accuracy": 0.5, "params": 10, "flops": 3}]
    m = to_min_matrix(records, ["accuracy:max", "params:min"])
    np.testing.assert_array_equal(m, [[-0.91, 12345.0], [-0.5, 10.0]])
    assert to_min_matrix([], ["accuracy:max"]).shape == (0, 1)


@pytest.mark.parametrize("records", [
    [{"accuracy": 0.9}],                          # missing params
    [{"accuracy": float("nan"), "params": 1}],    # NaN
    [{"accuracy": "high", "params": 1}],          # not a number
    [[0.9, 1]],                                   # not a mapping
])
def test_to_min_matrix_errors(records):
    with pytest.raises(ValueError):
        to_min_matrix(records, ["accuracy:max", "params:min"])


# --------------------------------------------------------------------------- sorting

# Hand-made 2-D set (minimise both):
#   0 (1,5)  1 (2,3)  2 (4,1)   front 0: none dominates another
#   3 (3,4)  dominated by 1;  4 (5,2) dominated by 2          -> front 1
#   5 (5,5)  dominated by 3 and 4                             -> front 2
#   6 (2,3)  duplicate of 1 -> front 0 as well
HAND = [(1, 5), (2, 3), (4, 1), (3, 4), (5, 2), (5, 5), (2, 3)]


def test_non_dominated_sort_hand_set():
    assert non_dominated_sort(HAND) == [[0, 1, 2, 6], [3, 4], [5]]
    np.testing.assert_array_equal(pareto_ranks(HAND), [0, 0, 0, 1, 1, 2, 0])
    assert non_dominated_sort(np.zeros((0, 2))) == []
    assert non_dominated_sort([[3.0, 1.0]]) == [[0]]


def test_non_dominated_sort_3d():
    pts = [(1, 1, 1), (0, 2, 2), (2, 2, 2), (1, 1, 3), (3, 3, 3)]
    # (2,2,2) is dominated by (1,1,1); (1,1,3) by (1,1,1); (3,3,3) by (2,2,2) and (1,1,3)
    assert non_dominated_sort(pts) == [[0, 1], [2, 3], [4]]


def test_pareto_front_on_records_with_directions():
    records = [
        {"accuracy": 0.90, "params": 100},
        {"accuracy": 0.95, "params": 300},
        {"accuracy": 0.93, "params": 400},  # dominated by 1
        {"accuracy": 0.80, "params": 50},
        {"accuracy": 0.85, "params": 100},  # dominated by 0
    ]
    assert pareto_front(records, [Objective("accuracy", "max"), Objective("params", "min")]) == [0, 1, 3]
    assert pareto_front([], ["accuracy:max"]) == []


@pytest.mark.parametrize("bad", [[1.0, 2.0], [[1.0, float("nan")]], [[[1.0]]], [[1.0, math.inf]]])
def test_points_validation(bad):
    with pytest.raises(ValueError):
        non_dominated_sort(bad)
    with pytest.raises(ValueError):
        crowding_distance(bad)


# --------------------------------------------------------------------------- crowding


def test_crowding_distance_hand_values():
    # ranges: f1 4, f2 5.
    # f1 order 0,1,2,3: d1 += (3-0)/4 = .75, d2 += (4-1)/4 = .75
    # f2 order 3,2,1,0: d2 += (2-0)/5 = .4,  d1 += (5-1)/5 = .8
    pts = [(0, 5), (1, 2), (3, 1), (4, 0)]
    np.testing.assert_allclose(crowding_distance(pts), [math.inf, 1.55, 1.15, math.inf])


def test_crowding_distance_edge_cases():
    np.testing.assert_array_equal(crowding_distance([(1, 2), (2, 1)]), [math.inf, math.inf])
    np.testing.assert_array_equal(crowding_distance([(3, 3)]), [math.inf])
    np.testing.assert_array_equal(crowding_distance([(1, 1), (1, 1), (1, 1)]), [0, 0, 0])
    # f2 constant: only f1 counts, ties of f2 do not create boundaries
    np.testing.assert_allclose(crowding_distance([(0, 7), (1, 7), (4, 7)]), [math.inf, 1.0, math.inf])
    assert crowding_distance(np.zeros((0, 3))).shape == (0,)


def test_rank_and_crowding_per_front():
    ranks, crowd = rank_and_crowding(HAND)
    np.testing.assert_array_equal(ranks, [0, 0, 0, 1, 1, 2, 0])
    # front 1 = {(3,4), (5,2)}: two points, both boundaries
    assert math.isinf(crowd[3]) and math.isinf(crowd[4]) and math.isinf(crowd[5])
    # front 0 = (1,5), (2,3), (4,1), (2,3): index 1 is first of the tie in both sorts
    # f1 (range 3) order 0,1,6,2 ; f2 (range 4) order 2,1,6,0
    # d1 = (2-1)/3 + (3-1)/4 ; d6 = (4-2)/3 + (5-3)/4
    np.testing.assert_allclose(crowd[[1, 6]], [1 / 3 + 0.5, 2 / 3 + 0.5])
    assert math.isinf(crowd[0]) and math.isinf(crowd[2])


# --------------------------------------------------------------------------- hypervolume


def test_hypervolume_2d_hand():
    # sorted by f1: (2,7) (4,6) (5,5) (7,4), ref (10,10):
    # slabs [2,4]x3 + [4,5]x4 + [5,7]x5 + [7,10]x6 = 6 + 4 + 10 + 18 = 38
    pts = [(5, 5), (4, 6), (2, 7), (7, 4)]
    assert hypervolume(pts, [10, 10]) == pytest.approx(38.0)
    # dominated points, points beyond or on the reference add nothing
    more = pts + [(6, 6), (11, 0), (3, 10), (0, 12)]
    assert hypervolume(more, [10, 10]) == pytest.approx(38.0)


def test_hypervolume_3d_hand():
    # boxes to (4,4,4): (1,2,3) -> 3*2*1 = 6 ; (2,1,2) -> 2*3*2 = 12 ; overlap 2*2*1 = 4
    assert hypervolume([(1, 2, 3), (2, 1, 2)], [4, 4, 4]) == pytest.approx(14.0)
    assert hypervolume([(1, 2, 3), (2, 1, 2), (5, 0, 0)], [4, 4, 4]) == pytest.approx(14.0)


def test_hypervolume_with_max_objective_records():
    records = [{"acc": 0.9, "params": 2.0}, {"acc": 0.5, "params": 1.0}]
    m = to_min_matrix(records, ["acc:max", "params:min"])
    # ref (acc 0 -> 0, params 3): boxes 0.9*1 and 0.5*2, overlap 0.5*1 -> 1.4
    assert hypervolume(m, [0.0, 3.0]) == pytest.approx(1.4)


def test_hypervolume_empty_and_errors():
    assert hypervolume(np.zeros((0, 2)), [1, 1]) == 0.0
    assert hypervolume([], [1, 1]) == 0.0
    assert hypervolume([(2, 2)], [1, 1]) == 0.0
    with pytest.raises(ValueError):
        hypervolume([(1, 2, 3)], [4, 4])           # wrong dimension
    with pytest.raises(ValueError):
        hypervolume([(1, 2)], [[4, 4]])            # reference not 1-D
    with pytest.raises(ValueError):
        hypervolume([(1, float("nan"))], [4, 4])
    with pytest.raises(ValueError):
        hypervolume([(1, 2)], [4, float("nan")])


# --------------------------------------------------------------------------- knee


def test_knee_point_hand_front():
    # front (0,10) (1,4) (2,2) (4,1) (10,0): normalised by 10 the sums are 1, .5, .4, .5, 1
    front = [(10, 0), (1, 4), (0, 10), (4, 1), (2, 2)]
    assert knee_point(front) == 4
    # dominated points never win, even ones closer to the ideal than the extremes
    assert knee_point(front + [(3, 3), (2, 2.5)]) == 4


def test_knee_point_mixed_scales_and_edge_cases():
    # f2 in thousands: normalisation makes the scale irrelevant -> same knee as above
    front = [(0, 10000), (1, 4000), (2, 2000), (4, 1000), (10, 0)]
    assert knee_point(front) == 2
    assert knee_point([(3, 3)]) == 0
    # two equal candidates: lowest index
    assert knee_point([(0, 1), (1, 0)]) == 0
    with pytest.raises(ValueError):
        knee_point(np.zeros((0, 2)))
