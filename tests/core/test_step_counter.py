"""One step counter per session: the session's StepCounter, read by every pruner, advanced once per step."""

from __future__ import annotations

from nc_prune import WeightPruningConfig
from nc_prune.core.layers import LayerInfo
from nc_prune.core.pruner import StepCounter
from nc_prune.core.session import PruningSession

from test_layers_session import NumpyGlue, make_store, session, train_step


def _two_groups():
    return WeightPruningConfig(pruning_configs=[{"op_names": ["a"], "pattern": "4x1"},
                                                {"op_names": ["b"], "pattern": "2:4"}],
                               pruning_type="magnitude", target_sparsity=0.5, start_step=2, end_step=6,
                               pruning_frequency=2)


def test_pruners_read_the_session_counter_and_it_advances_once_per_step():
    rng, store = make_store(0, {"a": (8, 8), "b": (8, 8)})
    sess = session(_two_groups(), store)
    assert len(sess.pruners) == 2
    assert all(p.step_counter is sess.step_counter for p in sess.pruners)
    for _ in range(3):
        train_step(sess, rng, store)
    assert sess.global_step == 3 and [p.global_step for p in sess.pruners] == [3, 3]
    sess.step_counter.set(6)  # one write (a resume) is seen by everyone, with nothing to copy
    assert [p.global_step for p in sess.pruners] == [6, 6] and all(p.is_pruning_step() for p in sess.pruners)


def test_a_backend_counter_is_the_one_every_object_reads():
    class Stored(StepCounter):  # as the torch backend's ModelStep: the value lives elsewhere
        def __init__(self):
            super().__init__()
            self.box = [0]

        def get(self):
            return self.box[0]

        def set(self, value):
            self.box[0] = int(value)

    counter = Stored()
    rng, store = make_store(0, {"a": (8, 8), "b": (8, 8)})
    infos = [LayerInfo(n, ("Linear",), v["w"].shape, True) for n, v in store.items()]
    sess = PruningSession(_two_groups(), infos, lambda plan: {l.name: store[l.name] for l in plan}, NumpyGlue,
                          step_counter=counter)
    assert sess.step_counter is counter
    for _ in range(2):
        train_step(sess, rng, store)
    assert counter.box == [2]
    counter.box[0] = 5  # written where it is stored
    assert sess.global_step == 5 and [p.global_step for p in sess.pruners] == [5, 5]


def test_a_pruner_alone_counts_its_own_steps():
    rng, store = make_store(0, {"a": (8, 8), "b": (8, 8)})
    sess = session(_two_groups(), store)
    cls = type(sess.pruners[0])
    alone = cls(sess.pruners[0].config, {"a": store["a"]})
    assert alone.step_counter is not sess.step_counter
    alone.on_step_end()
    alone.on_step_end()
    assert alone.global_step == 2 and sess.global_step == 0
