"""Layer 6, the study: experiments (one spec -> one results row), datasets prepared and scored (runs),
paired statistics and verdicts (stats), the paper's numbers, the notebooks' parameters (profiles) and
runner (notebooks), the CLI (`python -m eas`) and `make bench` (bench)."""
