"""Search plots draw on their own Agg canvas: importing tfmtnas leaves matplotlib's backend
(and pyplot) alone, and plotting works under any backend."""

import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import sys
    import matplotlib

    before = matplotlib.get_backend()
    import tfmtnas
    import tfmtnas.pipelines.searching
    from tfmtnas.search import plots, preset

    assert matplotlib.get_backend() == before, (before, matplotlib.get_backend())
    assert "matplotlib.pyplot" not in sys.modules
    path = plots.plot_graph(preset("ple", ["a", "b"], expert_units=(4,)), sys.argv[1])
    assert path.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    assert matplotlib.get_backend() == before, (before, matplotlib.get_backend())
    assert "matplotlib.pyplot" not in sys.modules
    print(before)
""")


def test_importing_tfmtnas_keeps_the_matplotlib_backend(tmp_path):
    # svg: a non-interactive backend other than Agg, which the old import selected.
    env = dict(os.environ, MPLBACKEND="svg", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "graph.png")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg"]
