"""Design-space exploration: sweep chip parameters over a base chip and compare designs.

- space.py: SPACE.toml files (knobs, constraints, workloads, objectives) and stable point ids;
- design.py: a point's chip (knobs applied, dependent numbers derived) and its physical checks;
- objective.py: tokens/s per chip at a latency SLO (analytic steady state, or the serving simulator);
- evaluate.py: one point -> one record; sweep.py: local processes or Ray, JSONL results that resume;
- pareto.py: the front and rankings; plots.py: matplotlib figures; study.py: `tapeout study`.

Only the standard library and numpy are imported at module level; the models, matplotlib and ray
are imported where used.
"""
