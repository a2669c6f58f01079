"""An export loads and answers in TensorFlow's C++ runtime (the C API a model server uses)."""

from __future__ import annotations

import numpy as np
import pytest

from tfmtnas.export import to_columns
from tfmtnas.export.capi import CApiSession


def test_c_api_reproduces_the_model(exported, tiny):
    cols = to_columns(tiny.heldout, tiny.spec)  # rows 0-2: unseen, empty and known colours
    expected = tiny.model.predict_raw(tiny.heldout)
    with CApiSession(exported.path) as session:
        assert session.input_names == sorted(tiny.spec.names)
        assert session.output_names == ["click", "watch_time"]
        session.set_inputs(cols)
        got = session.run()
        for task in ("click", "watch_time"):
            assert got[task].shape == (64,)
            np.testing.assert_allclose(got[task], expected[task], rtol=0, atol=1e-5)
        # One example at a time gives the same numbers as the batch.
        session.set_inputs({k: v[5:6] for k, v in cols.items()})
        np.testing.assert_allclose(session.run()["click"], expected["click"][5:6], atol=1e-5)
        times = session.time_runs(20)
    assert len(times) == 20 and all(t > 0 for t in times)
    # The thread settings a server tunes change the schedule, not the numbers.
    with CApiSession(exported.path, inter_op_threads=1, intra_op_threads=1) as session:
        session.set_inputs(cols)
        np.testing.assert_allclose(session.run()["watch_time"], expected["watch_time"],
                                   atol=1e-5)


def test_c_api_errors_name_the_problem(exported, tiny, tmp_path):
    with pytest.raises(RuntimeError, match="could not load the SavedModel"):
        CApiSession(tmp_path)
    with pytest.raises(KeyError, match="no signature 'nope'"):
        CApiSession(exported.path, signature="nope")
    with pytest.raises(ValueError, match="inter_op_threads=-1"):
        CApiSession(exported.path, inter_op_threads=-1)
    cols = to_columns(tiny.heldout, tiny.spec)
    with CApiSession(exported.path) as session:
        with pytest.raises(RuntimeError, match="call set_inputs"):
            session.run()
        with pytest.raises(KeyError, match="Missing inputs \\['age'\\]"):
            session.set_inputs({k: v for k, v in cols.items() if k != "age"})
        with pytest.raises(KeyError, match="Unknown inputs \\['colour'\\]"):
            session.set_inputs({**cols, "colour": cols["color"]})
        with pytest.raises(ValueError, match="Input 'age': expected a vector"):
            session.set_inputs({**cols, "age": cols["age"].reshape(8, 8)})
        # A graph-side error (features of different lengths) is raised, not a crash.
        session.set_inputs({**cols, "age": cols["age"][:3]})
        with pytest.raises(RuntimeError, match="age"):
            session.run()
