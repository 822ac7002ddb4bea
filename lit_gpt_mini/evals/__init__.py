"""Benchmarks that score a checkpoint: ``main.py eval`` (:mod:`lit_gpt_mini.evals.command`) and, during training,
a callback (:mod:`lit_gpt_mini.evals.callback`). One task so far, HellaSwag (:mod:`lit_gpt_mini.evals.hellaswag`);
another goes beside it, with its own ``--task`` name."""
