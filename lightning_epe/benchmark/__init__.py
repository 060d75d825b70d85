"""Benchmark scores against NAS-Bench-201 ground truth: rank correlations, metrics of the top, the paper's search
table, plots.

No Lightning here. The one entry point is :func:`run_benchmark`; the pieces are public too.
"""
from .correlation import rank_correlations, score_ranks
from .draws import draw_series, draws_table
from .ground_truth import NATS_COLUMNS, load_csv_ground_truth, load_ground_truth, load_nats_ground_truth
from .runner import run_benchmark
from .simulation import PAPER_COLUMNS, PAPER_TABLE, expected_random_search, simulate_random_search
from .tables import Table, join, read_csv_table, read_jsonl_scores, read_scores
from .top import bootstrap, gap_closed, ndcg_at_k, precision_at_top

__all__ = [
    "NATS_COLUMNS", "PAPER_COLUMNS", "PAPER_TABLE", "Table", "bootstrap", "draw_series", "draws_table",
    "expected_random_search", "gap_closed", "join", "ndcg_at_k", "precision_at_top",
    "load_csv_ground_truth", "load_ground_truth", "load_nats_ground_truth", "rank_correlations",
    "read_csv_table", "read_jsonl_scores", "read_scores", "run_benchmark", "score_ranks",
    "simulate_random_search",
]
