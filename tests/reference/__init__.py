"""Faithful ports of the reference implementations that the strategies are checked against, side by side.

Each module ports the core computation of one published repository, with the repository, file and commit it
follows in its header, and says every line where it departs from the original (and why: e.g. the noise source is
passed in instead of built inside, so that a test can give both sides the same fresh values).

- ``warm_start``: shrink & perturb, JordanAsh/warm_start ``run.py``;
- ``redo``: ReDo, timoklein/redo ``src/redo.py`` and google/dopamine ``dopamine/labs/redo/weight_recyclers.py``;
- ``gnt``: continual backprop, shibhansh/loss-of-plasticity ``lop/algos/gnt.py`` (and ``convGnT.py`` for convs);
- ``dash``: DASH, baekrok/DASH-Direction-Aware-SHrinking ``utils/train_utils.py``.
"""
